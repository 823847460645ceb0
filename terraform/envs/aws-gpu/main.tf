# AWS for a rayloom Ray cluster: network, data bucket + node image repository, node roles and
# security groups. The outputs fill cluster/aws-gpu.yaml (`rayloom cluster render aws`).

locals {
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.name}-data-${data.aws_caller_identity.current.account_id}"
}

data "aws_caller_identity" "current" {}

# AWS Deep Learning Base AMI: NVIDIA driver, Docker and the NVIDIA container toolkit, for every node.
data "aws_ssm_parameter" "gpu_ami" {
  name = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
}

module "network" {
  source             = "../../modules/network"
  name               = var.name
  cidr_block         = var.vpc_cidr_block
  availability_zones = var.availability_zones
}

module "storage" {
  source      = "../../modules/storage"
  name        = var.name
  bucket_name = local.bucket_name
}

module "iam" {
  source                    = "../../modules/iam"
  name                      = var.name
  ray_cluster_name          = var.ray_cluster_name
  bucket_arn                = module.storage.bucket_arn
  kms_key_arn               = module.storage.kms_key_arn
  node_image_repository_arn = module.storage.node_image_repository_arn
  auth_token_parameter      = var.auth_token_parameter
  # What the autoscaler (and so any job driver on the head) may launch: nothing else.
  private_subnet_ids              = module.network.private_subnet_ids
  ray_nodes_security_group_id     = module.security.ray_nodes_security_group_id
  allowed_image_ids               = [data.aws_ssm_parameter.gpu_ami.insecure_value]
  worker_instance_types           = var.worker_instance_types
  enable_spot                     = var.enable_spot
  create_spot_service_linked_role = var.create_spot_service_linked_role
}

module "security" {
  source            = "../../modules/security"
  name              = var.name
  vpc_id            = module.network.vpc_id
  vpc_cidr_block    = module.network.vpc_cidr_block
  enable_bastion    = var.enable_bastion
  admin_cidr_blocks = var.admin_cidr_blocks
}

module "bastion" {
  source            = "../../modules/bastion"
  count             = var.enable_bastion ? 1 : 0
  name              = var.name
  subnet_id         = module.network.public_subnet_ids[0]
  security_group_id = module.security.bastion_security_group_id
  key_name          = var.bastion_key_name
}
