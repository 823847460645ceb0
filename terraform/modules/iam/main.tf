# Instance roles of the Ray nodes. Training workers (and the head) may read and write the data bucket
# (and use its KMS key), pull the node image and read the Ray auth token parameter, nothing else.
# Serving workers get the same minus every write and delete: replicas only read models and adapters.
# The head additionally runs the autoscaler: it may launch instances only of the worker types, from
# the node AMI, into the private subnets and the Ray nodes' security group, without a public IP,
# with IMDSv2, tagged for this cluster; and pass only the worker roles, only to EC2. Job drivers run
# on the head and so hold this role: these conditions bound what a job could launch.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition           = data.aws_partition.current.partition
  region              = data.aws_region.current.name
  account             = data.aws_caller_identity.current.account_id
  token_parameter_arn = "arn:${local.partition}:ssm:${local.region}:${local.account}:parameter${var.auth_token_parameter}"
  subnet_arns         = [for id in var.private_subnet_ids : "arn:${local.partition}:ec2:${local.region}:${local.account}:subnet/${id}"]
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

# Serving replicas read models, adapters and lineage; they never write or delete bucket objects.
data "aws_iam_policy_document" "serve_node" {
  statement {
    sid       = "ListDataBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "ReadDataObjects"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/*"]
  }
  statement {
    sid       = "DecryptWithDataKey"
    actions   = ["kms:Decrypt", "kms:DescribeKey"]
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
    sid       = "LaunchOnlyTaggedWorkerTypes"
    actions   = ["ec2:RunInstances"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ray-cluster-name"
      values   = [var.ray_cluster_name]
    }
    condition {
      test     = "StringEquals"
      variable = "ec2:InstanceType"
      values   = var.worker_instance_types
    }
    condition {
      test     = "StringEquals"
      variable = "ec2:MetadataHttpTokens"
      values   = ["required"]
    }
  }
  statement {
    sid       = "LaunchWithEncryptedVolumes"
    actions   = ["ec2:RunInstances"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:volume/*"]
    condition {
      test     = "Bool"
      variable = "ec2:Encrypted"
      values   = ["true"]
    }
  }
  statement {
    sid       = "LaunchPrivateInterfacesOnly"
    actions   = ["ec2:RunInstances"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:network-interface/*"]
    condition {
      test     = "ArnEquals"
      variable = "ec2:Subnet"
      values   = local.subnet_arns
    }
    condition {
      test     = "BoolIfExists"
      variable = "ec2:AssociatePublicIpAddress"
      values   = ["false"]
    }
  }
  statement {
    sid     = "LaunchIntoTheseSubnetsGroupAndImage"
    actions = ["ec2:RunInstances"]
    resources = concat(
      local.subnet_arns,
      ["arn:${local.partition}:ec2:${local.region}:${local.account}:security-group/${var.ray_nodes_security_group_id}"],
      [for id in var.allowed_image_ids : "arn:${local.partition}:ec2:${local.region}::image/${id}"],
      ["arn:${local.partition}:ec2:${local.region}:${local.account}:key-pair/*"],
    )
  }
  dynamic "statement" {
    for_each = var.enable_spot ? [] : [1]
    content {
      sid       = "NoSpotUnlessEnabled"
      effect    = "Deny"
      actions   = ["ec2:RunInstances"]
      resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]
      condition {
        test     = "StringEquals"
        variable = "ec2:InstanceMarketType"
        values   = ["spot"]
      }
    }
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
    sid       = "PassWorkerRolesToEc2"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn, aws_iam_role.serve.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }
  statement {
    sid       = "ReadInstanceProfiles"
    actions   = ["iam:GetInstanceProfile"]
    resources = [aws_iam_instance_profile.worker.arn, aws_iam_instance_profile.serve.arn]
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

resource "aws_iam_role" "serve" {
  name_prefix        = "${var.name}-ray-serve-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "serve_node" {
  name   = "rayloom-serve-node"
  role   = aws_iam_role.serve.id
  policy = data.aws_iam_policy_document.serve_node.json
}

resource "aws_iam_instance_profile" "serve" {
  name_prefix = "${var.name}-ray-serve-"
  role        = aws_iam_role.serve.name
}

# EC2 launches spot instances through this service-linked role; AWS creates it on an account's first
# spot request when the caller may (the head may not), so create it here unless it already exists.
resource "aws_iam_service_linked_role" "spot" {
  count            = var.enable_spot && var.create_spot_service_linked_role ? 1 : 0
  aws_service_name = "spot.amazonaws.com"
  description      = "EC2 spot instances (rayloom spot GPU workers)"
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
