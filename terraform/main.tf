# The AWS inventory: every resource is a for_each over a variable that comes from
# inventory.tfvars.json, so adding a bucket/queue/topic/secret is an edit of that file only.

locals {
  prefix = "${var.project}-${var.environment}"

  # Customer-managed KMS key on AWS; on LocalStack (no KMS in its service list) the
  # AWS-managed keys are used, which is what the boto3 path applies too.
  kms_key_arn = one(aws_kms_key.platform[*].arn)

  queue_names = { for k, _ in var.queues : k => "${local.prefix}-${k}" }

  subscriptions = merge([
    for tk, t in var.topics : {
      for s in t.subscriptions : "${tk}:${s.queue}" => {
        topic                = tk
        queue                = s.queue
        raw_message_delivery = s.raw_message_delivery
      }
    }
  ]...)

  # Which topics publish into each queue (drives the queue policies).
  queue_publishers = {
    for qk, _ in var.queues : qk => [for sk, s in local.subscriptions : s.topic if s.queue == qk]
  }
}

data "aws_caller_identity" "current" {}

# -- KMS ------------------------------------------------------------------------------------
resource "aws_kms_key" "platform" {
  count                   = var.use_localstack ? 0 : 1
  description             = "${local.prefix}: encryption of buckets, queues, topics, secrets and EKS secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "SnsDeliversToEncryptedQueues"
        Effect    = "Allow"
        Principal = { Service = "sns.amazonaws.com" }
        Action    = ["kms:GenerateDataKey*", "kms:Decrypt"]
        Resource  = "*"
      }
    ]
  })
}

resource "aws_kms_alias" "platform" {
  count         = var.use_localstack ? 0 : 1
  name          = "alias/${local.prefix}-platform"
  target_key_id = aws_kms_key.platform[0].key_id
}

# -- S3 ---------------------------------------------------------------------------------------
resource "aws_s3_bucket" "this" {
  for_each            = var.buckets
  bucket              = "${local.prefix}-${each.key}"
  object_lock_enabled = each.value.object_lock != null
  tags                = { Purpose = each.value.purpose }
}

# Write-once buckets (the evidence archive): every object version is locked for the
# environment's retention; in COMPLIANCE mode nobody, root included, can shorten or remove it.
resource "aws_s3_bucket_object_lock_configuration" "this" {
  for_each   = { for k, b in var.buckets : k => b if b.object_lock != null }
  bucket     = aws_s3_bucket.this[each.key].id
  depends_on = [aws_s3_bucket_versioning.this]
  rule {
    default_retention {
      mode = each.value.object_lock.mode
      days = each.value.object_lock.retention_days[var.environment]
    }
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  # var.buckets' validation requires versioning = true (GxP: every version is kept), so the
  # status is literal here, which also lets checkov see it.
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = each.value.sse_algorithm
      kms_master_key_id = each.value.sse_algorithm == "aws:kms" ? local.kms_key_arn : null
    }
    bucket_key_enabled = each.value.sse_algorithm == "aws:kms"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = var.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each   = var.buckets # validation: every bucket has at least one rule
  bucket     = aws_s3_bucket.this[each.key].id
  depends_on = [aws_s3_bucket_versioning.this]

  dynamic "rule" {
    for_each = each.value.lifecycle_rules
    content {
      id     = rule.value.id
      status = "Enabled"

      filter {
        prefix = rule.value.prefix
      }

      dynamic "expiration" {
        for_each = rule.value.expiration_days == null ? [] : [rule.value.expiration_days]
        content {
          days = expiration.value
        }
      }

      dynamic "noncurrent_version_expiration" {
        for_each = rule.value.noncurrent_expiration_days == null ? [] : [rule.value.noncurrent_expiration_days]
        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }

      dynamic "transition" {
        for_each = rule.value.transition_days == null ? [] : [rule.value]
        content {
          days          = transition.value.transition_days
          storage_class = transition.value.storage_class
        }
      }

      dynamic "noncurrent_version_transition" {
        for_each = rule.value.noncurrent_transition_days == null ? [] : [rule.value]
        content {
          noncurrent_days = noncurrent_version_transition.value.noncurrent_transition_days
          storage_class   = noncurrent_version_transition.value.noncurrent_storage_class
        }
      }

      abort_incomplete_multipart_upload {
        days_after_initiation = rule.value.abort_multipart_days
      }
    }
  }
}

# -- SQS (each queue with its dead-letter queue) ----------------------------------------------------
resource "aws_sqs_queue" "dlq" {
  for_each                  = var.queues
  name                      = "${local.queue_names[each.key]}-dlq"
  message_retention_seconds = each.value.dlq_retention_seconds
  kms_master_key_id         = local.kms_key_arn
  sqs_managed_sse_enabled   = local.kms_key_arn == null ? true : null
  tags                      = { Purpose = "dead letters of ${local.queue_names[each.key]}" }
}

resource "aws_sqs_queue" "this" {
  for_each                   = var.queues
  name                       = local.queue_names[each.key]
  visibility_timeout_seconds = each.value.visibility_timeout_seconds
  message_retention_seconds  = each.value.message_retention_seconds
  kms_master_key_id          = local.kms_key_arn
  sqs_managed_sse_enabled    = local.kms_key_arn == null ? true : null
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = each.value.max_receive_count
  })
  tags = { Purpose = each.value.purpose }
}

resource "aws_sqs_queue_policy" "this" {
  for_each  = { for qk, topics in local.queue_publishers : qk => topics if length(topics) > 0 }
  queue_url = aws_sqs_queue.this[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      for tk in each.value : {
        Sid       = "sns-${aws_sns_topic.this[tk].name}"
        Effect    = "Allow"
        Principal = { Service = "sns.amazonaws.com" }
        Action    = "sqs:SendMessage"
        Resource  = aws_sqs_queue.this[each.key].arn
        Condition = { ArnEquals = { "aws:SourceArn" = aws_sns_topic.this[tk].arn } }
      }
    ]
  })
}

# -- SNS --------------------------------------------------------------------------------------------
resource "aws_sns_topic" "this" {
  for_each          = var.topics
  name              = "${local.prefix}-${each.key}"
  kms_master_key_id = coalesce(local.kms_key_arn, "alias/aws/sns")
  tags              = { Purpose = each.value.purpose }
}

resource "aws_sns_topic_subscription" "this" {
  for_each             = local.subscriptions
  topic_arn            = aws_sns_topic.this[each.value.topic].arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.this[each.value.queue].arn
  raw_message_delivery = each.value.raw_message_delivery
  depends_on           = [aws_sqs_queue_policy.this]
}

# -- Secrets Manager: values are generated here and written write-only ---------------------------
# An ephemeral random_password never enters the plan or the state; secret_string_wo sends
# it to Secrets Manager only. Bumping secret_string_wo_version rotates every value.
ephemeral "random_password" "secret" {
  for_each = var.secrets
  length   = 40
  special  = false
}

resource "aws_secretsmanager_secret" "this" {
  for_each                = var.secrets
  name                    = "${local.prefix}-${each.key}"
  description             = each.value.description
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = var.use_localstack ? 0 : 30
}

resource "aws_secretsmanager_secret_version" "this" {
  for_each                 = var.secrets
  secret_id                = aws_secretsmanager_secret.this[each.key].id
  secret_string_wo         = ephemeral.random_password.secret[each.key].result
  secret_string_wo_version = 1
}
