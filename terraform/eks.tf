# The production EKS cluster (AWS only, off by default): raw resources rather than a module
# so every security setting is visible here and checked by checkov.
#   terraform apply -var-file=inventory.tfvars.json -var environment=prod \
#     -var create_eks=true -var 'eks_subnet_ids=["subnet-a","subnet-b"]'

locals {
  eks_count    = var.create_eks ? 1 : 0
  cluster_name = "${local.prefix}-eks"
}

data "aws_iam_policy_document" "eks_cluster_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "eks_node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "eks_cluster" {
  count              = local.eks_count
  name               = "${local.cluster_name}-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_cluster_assume.json
}

resource "aws_iam_role_policy_attachment" "eks_cluster" {
  for_each   = var.create_eks ? toset(["AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController"]) : toset([])
  role       = aws_iam_role.eks_cluster[0].name
  policy_arn = "arn:aws:iam::aws:policy/${each.value}"
}

resource "aws_iam_role" "eks_node" {
  count              = local.eks_count
  name               = "${local.cluster_name}-node"
  assume_role_policy = data.aws_iam_policy_document.eks_node_assume.json
}

resource "aws_iam_role_policy_attachment" "eks_node" {
  for_each = var.create_eks ? toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ]) : toset([])
  role       = aws_iam_role.eks_node[0].name
  policy_arn = "arn:aws:iam::aws:policy/${each.value}"
}

resource "aws_eks_cluster" "this" {
  count    = local.eks_count
  name     = local.cluster_name
  version  = var.eks_version
  role_arn = aws_iam_role.eks_cluster[0].arn

  vpc_config {
    subnet_ids              = var.eks_subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.eks_public_access_cidrs) > 0
    public_access_cidrs     = length(var.eks_public_access_cidrs) > 0 ? var.eks_public_access_cidrs : null
  }

  # Kubernetes Secrets are envelope-encrypted with the platform key.
  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = local.kms_key_arn
    }
  }

  # Control-plane audit trail (21 CFR Part 11: attributable, time-stamped actions).
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  lifecycle {
    precondition {
      condition     = !var.use_localstack
      error_message = "create_eks needs real AWS; LocalStack's community edition has no EKS."
    }
    precondition {
      condition     = length(var.eks_subnet_ids) >= 2
      error_message = "create_eks needs eks_subnet_ids with at least two private subnets in different AZs."
    }
  }

  depends_on = [aws_iam_role_policy_attachment.eks_cluster]
}

resource "aws_eks_node_group" "this" {
  count           = local.eks_count
  cluster_name    = aws_eks_cluster.this[0].name
  node_group_name = "${local.cluster_name}-default"
  node_role_arn   = aws_iam_role.eks_node[0].arn
  subnet_ids      = var.eks_subnet_ids
  instance_types  = var.eks_node_instance_types

  scaling_config {
    min_size     = var.eks_node_scaling.min
    desired_size = var.eks_node_scaling.desired
    max_size     = var.eks_node_scaling.max
  }

  update_config {
    max_unavailable = 1
  }

  depends_on = [aws_iam_role_policy_attachment.eks_node]
}
