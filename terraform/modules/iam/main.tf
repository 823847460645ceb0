# Instance roles of the Ray nodes. Workers may use the data bucket (and its KMS key), pull the node
# image and read the Ray auth token parameter, nothing else. The head additionally runs the
# autoscaler: it launches and terminates this cluster's instances and passes the worker role.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition           = data.aws_partition.current.partition
  region              = data.aws_region.current.name
  account             = data.aws_caller_identity.current.account_id
  token_parameter_arn = "arn:${local.partition}:ssm:${local.region}:${local.account}:parameter${var.auth_token_parameter}"
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "ListDataBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "ReadWriteDataObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${var.bucket_arn}/*"]
  }
  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "ReadRayAuthToken"
    actions   = ["ssm:GetParameter"]
    resources = [local.token_parameter_arn]
  }
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # ECR's login call has no resource scope
  }
  statement {
    sid       = "PullNodeImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [var.node_image_repository_arn]
  }
}

data "aws_iam_policy_document" "autoscaler" {
  statement {
    sid       = "DescribeForAutoscaler"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypes", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeImages", "ec2:DescribeKeyPairs", "ec2:DescribeAvailabilityZones"]
    resources = ["*"] # Describe calls cannot be scoped to resources
  }
  statement {
    sid       = "LaunchOnlyTaggedInstances"
    actions   = ["ec2:RunInstances"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ray-cluster-name"
      values   = [var.ray_cluster_name]
    }
  }
  statement {
    sid     = "LaunchWithTheseParts"
    actions = ["ec2:RunInstances"]
    resources = [
      "arn:${local.partition}:ec2:${local.region}:${local.account}:volume/*",
      "arn:${local.partition}:ec2:${local.region}:${local.account}:network-interface/*",
      "arn:${local.partition}:ec2:${local.region}:${local.account}:subnet/*",
      "arn:${local.partition}:ec2:${local.region}:${local.account}:security-group/*",
      "arn:${local.partition}:ec2:${local.region}:${local.account}:key-pair/*",
      "arn:${local.partition}:ec2:${local.region}::image/*",
    ]
  }
  statement {
    sid       = "TagAtLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*", "arn:${local.partition}:ec2:${local.region}:${local.account}:volume/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }
  statement {
    sid       = "ManageOnlyThisClustersInstances"
    actions   = ["ec2:CreateTags", "ec2:TerminateInstances", "ec2:StartInstances", "ec2:StopInstances"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/ray-cluster-name"
      values   = [var.ray_cluster_name]
    }
  }
  statement {
    sid       = "PassWorkerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]
  }
  statement {
    sid       = "ReadInstanceProfiles"
    actions   = ["iam:GetInstanceProfile"]
    resources = [aws_iam_instance_profile.worker.arn]
  }
}

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.name}-ray-worker-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "worker_node" {
  name   = "rayloom-node"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_instance_profile" "worker" {
  name_prefix = "${var.name}-ray-worker-"
  role        = aws_iam_role.worker.name
}

resource "aws_iam_role" "head" {
  name_prefix        = "${var.name}-ray-head-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "head_node" {
  name   = "rayloom-node"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_role_policy" "head_autoscaler" {
  name   = "ray-autoscaler"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.autoscaler.json
}

resource "aws_iam_instance_profile" "head" {
  name_prefix = "${var.name}-ray-head-"
  role        = aws_iam_role.head.name
}
