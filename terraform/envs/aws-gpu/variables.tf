variable "name" {
  description = "Name of this environment; prefixes every resource."
  type        = string
  default     = "rayloom-gpu"
}

variable "region" {
  description = "AWS region (one that offers the GPU instance types in cluster/aws-gpu.yaml)."
  type        = string
  default     = "us-west-2"
}

variable "availability_zones" {
  description = "Zones for the subnets; GPU capacity differs per zone."
  type        = list(string)
  default     = ["us-west-2a", "us-west-2b"]
}

variable "vpc_cidr_block" {
  description = "VPC CIDR."
  type        = string
  default     = "10.42.0.0/16"
}

variable "bucket_name" {
  description = "Data/checkpoint bucket; empty -> <name>-data-<account id>."
  type        = string
  default     = ""
}

variable "ray_cluster_name" {
  description = "cluster_name in cluster/aws-gpu.yaml (the autoscaler may only manage instances tagged with it)."
  type        = string
  default     = "rayloom-gpu"
}

variable "auth_token_parameter" {
  description = "SSM SecureString parameter holding the Ray auth token; create it yourself, Terraform never sees the value."
  type        = string
  default     = "/rayloom/rayloom-gpu/ray-auth-token"
}

variable "enable_bastion" {
  description = "Create an SSH bastion in a public subnet for `ray up` from outside the VPC."
  type        = bool
  default     = true
}

variable "bastion_key_name" {
  description = "EC2 key pair for the bastion."
  type        = string
  default     = ""
}

variable "admin_cidr_blocks" {
  description = "Networks allowed to SSH to the bastion, e.g. [\"203.0.113.7/32\"]. Never 0.0.0.0/0."
  type        = list(string)
  default     = []
}

variable "worker_instance_types" {
  description = "Instance types of the worker node types in cluster/aws-gpu.yaml; the autoscaler may launch only these."
  type        = list(string)
  default     = ["g5.2xlarge", "p5.48xlarge", "p5en.48xlarge"]
}

variable "enable_spot" {
  description = "Allow spot GPU workers (the *.spot node types of cluster/aws-gpu.yaml)."
  type        = bool
  default     = true
}

variable "create_spot_service_linked_role" {
  description = "Create AWSServiceRoleForEC2Spot (once per account; leave false if it exists)."
  type        = bool
  default     = false
}
