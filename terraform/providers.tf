# Providers. One configuration for AWS and for LocalStack: `use_localstack = true`
# (terraform/localstack.tfvars.json) points every endpoint at `var.localstack_endpoint`,
# uses LocalStack's fixed test credentials and path-style S3 addressing.
#
#   AWS:        terraform apply -var-file=inventory.tfvars.json -var environment=prod
#   LocalStack: terraform apply -var-file=inventory.tfvars.json -var-file=localstack.tfvars.json \
#                 -var localstack_endpoint=http://127.0.0.1:4566
#
# State is local by default (clinops keeps the LocalStack state under its state dir with
# -state=...); a production account configures its S3 backend with a backend override file.

terraform {
  # 1.11: write-only attributes (secret_string_wo), so generated secret values never reach state.
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.90"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}

locals {
  localstack_url = var.use_localstack ? var.localstack_endpoint : null
}

provider "aws" {
  region = var.aws_region

  # LocalStack accepts any credentials; "test" is its documented convention, not a secret.
  access_key                  = var.use_localstack ? "test" : null
  secret_key                  = var.use_localstack ? "test" : null
  skip_credentials_validation = var.use_localstack
  skip_metadata_api_check     = var.use_localstack
  skip_region_validation      = var.use_localstack
  s3_use_path_style           = var.use_localstack

  endpoints {
    s3             = local.localstack_url
    sqs            = local.localstack_url
    sns            = local.localstack_url
    secretsmanager = local.localstack_url
    sts            = local.localstack_url
    kms            = local.localstack_url
    iam            = local.localstack_url
  }

  default_tags {
    tags = {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
      Inventory   = "terraform/inventory.tfvars.json"
    }
  }
}

provider "random" {}
