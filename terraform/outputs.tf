# What the platform's services are wired to (clinops_lib.inventory.service_resources
# computes the same values for the local target).

output "bucket_names" {
  description = "S3 bucket name by inventory key."
  value       = { for k, b in aws_s3_bucket.this : k => b.bucket }
}

output "queue_urls" {
  description = "SQS queue URL by inventory key."
  value       = { for k, q in aws_sqs_queue.this : k => q.url }
}

output "dead_letter_queue_arns" {
  description = "Dead-letter queue ARN by inventory key."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.arn }
}

output "topic_arns" {
  description = "SNS topic ARN by inventory key."
  value       = { for k, t in aws_sns_topic.this : k => t.arn }
}

output "secret_arns" {
  description = "Secrets Manager ARN by inventory key (values are never output)."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}

output "observations_topic_arn" {
  description = "Where the clinical-gateway publishes observations (CLINOPS_EVENTS_TOPIC_ARN)."
  value       = aws_sns_topic.this["observations"].arn
}

output "model_artifacts_bucket" {
  description = "Where model-serving loads models from (CLINOPS_MODEL_BUCKET)."
  value       = aws_s3_bucket.this["model-artifacts"].bucket
}

output "kms_key_arn" {
  description = "The platform's customer-managed KMS key (null on LocalStack)."
  value       = local.kms_key_arn
}

output "eks_cluster_endpoint" {
  description = "API endpoint of the production EKS cluster (null unless create_eks)."
  value       = one(aws_eks_cluster.this[*].endpoint)
}

output "eks_cluster_name" {
  description = "Name of the production EKS cluster (null unless create_eks)."
  value       = one(aws_eks_cluster.this[*].name)
}
