# Variables. The first five are the AWS inventory: their values come from
# inventory.tfvars.json (the one file the clinops library also reads), so the types here
# mirror that file's shape; tests/test_terraform.py checks both stay in step.

variable "project" {
  description = "Name prefix of every resource: <project>-<environment>-<key>."
  type        = string
}

variable "buckets" {
  description = "S3 buckets by key: versioning, default encryption and lifecycle rules."
  type = map(object({
    purpose       = optional(string, "")
    versioning    = bool
    sse_algorithm = string
    object_lock = optional(object({
      mode           = string
      retention_days = map(number)
    }))
    lifecycle_rules = list(object({
      id                         = string
      prefix                     = optional(string, "")
      expiration_days            = optional(number)
      noncurrent_expiration_days = optional(number)
      transition_days            = optional(number)
      storage_class              = optional(string)
      noncurrent_transition_days = optional(number)
      noncurrent_storage_class   = optional(string)
      abort_multipart_days       = number
    }))
  }))
  validation {
    condition     = alltrue([for b in var.buckets : b.versioning])
    error_message = "Every bucket must have versioning = true (GxP records keep every version)."
  }
  validation {
    condition     = alltrue([for b in var.buckets : length(b.lifecycle_rules) > 0])
    error_message = "Every bucket needs at least one lifecycle rule (retention is part of the storage design)."
  }
  validation {
    condition = alltrue([for b in var.buckets : b.object_lock == null || (
      contains(["COMPLIANCE", "GOVERNANCE"], try(b.object_lock.mode, "")) &&
      alltrue([for e in ["dev", "staging", "prod"] : contains(keys(try(b.object_lock.retention_days, {})), e)])
    )])
    error_message = "object_lock needs mode COMPLIANCE or GOVERNANCE and retention_days for dev, staging and prod."
  }
  validation {
    condition     = alltrue([for b in var.buckets : contains(["aws:kms", "AES256"], b.sse_algorithm)])
    error_message = "sse_algorithm must be aws:kms or AES256."
  }
}

variable "queues" {
  description = "SQS queues by key; each gets a dead-letter queue <name>-dlq and a redrive policy."
  type = map(object({
    purpose                    = optional(string, "")
    visibility_timeout_seconds = number
    message_retention_seconds  = number
    max_receive_count          = number
    dlq_retention_seconds      = number
  }))
}

variable "topics" {
  description = "SNS topics by key, each with its SQS subscriptions (queue = a key of var.queues)."
  type = map(object({
    purpose = optional(string, "")
    subscriptions = list(object({
      queue                = string
      raw_message_delivery = bool
    }))
  }))
}

variable "secrets" {
  description = "Secrets Manager secrets by key: names and descriptions only; values are generated at apply time."
  type = map(object({
    description = string
  }))
}

variable "environment" {
  description = "Deployment environment; part of every resource name."
  type        = string
  default     = "dev"
  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "aws_region" {
  description = "AWS region (LocalStack answers for any)."
  type        = string
  default     = "us-east-1"
}

variable "use_localstack" {
  description = "Point the AWS provider at LocalStack (localstack.tfvars.json sets it)."
  type        = bool
  default     = false
}

variable "localstack_endpoint" {
  description = "LocalStack edge URL used for every service when use_localstack is true."
  type        = string
  default     = "http://127.0.0.1:4566"
  validation {
    condition     = can(regex("^https?://", var.localstack_endpoint))
    error_message = "localstack_endpoint must be an http(s) URL."
  }
}

variable "create_eks" {
  description = "Create the production EKS cluster and its node group (AWS only)."
  type        = bool
  default     = false
}

variable "eks_version" {
  description = "Kubernetes version of the EKS control plane."
  type        = string
  default     = "1.31"
}

variable "eks_subnet_ids" {
  description = "Private subnets (at least two, in different AZs) for the EKS control plane and nodes."
  type        = list(string)
  default     = []
}

variable "eks_public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint; empty keeps the endpoint private only."
  type        = list(string)
  default     = []
}

variable "eks_node_instance_types" {
  description = "Instance types of the managed node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "eks_node_scaling" {
  description = "Managed node group size."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 2, desired = 3, max = 6 }
  validation {
    condition     = var.eks_node_scaling.min <= var.eks_node_scaling.desired && var.eks_node_scaling.desired <= var.eks_node_scaling.max
    error_message = "eks_node_scaling must satisfy min <= desired <= max."
  }
}
