variable "name" {
  description = "Name prefix."
  type        = string
}

variable "ray_cluster_name" {
  description = "cluster_name of the Ray launcher config; the head may only stop/terminate instances tagged with it."
  type        = string
}

variable "bucket_arn" {
  description = "The data bucket the nodes may read and write."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the bucket."
  type        = string
}

variable "node_image_repository_arn" {
  description = "ECR repository the nodes pull the node image from."
  type        = string
}

variable "auth_token_parameter" {
  description = "Name of the SSM SecureString holding the Ray auth token (created out of band)."
  type        = string

  validation {
    condition     = startswith(var.auth_token_parameter, "/")
    error_message = "The parameter name must start with '/'."
  }
}

variable "private_subnet_ids" {
  description = "The only subnets the autoscaler may launch workers into."
  type        = list(string)
}

variable "ray_nodes_security_group_id" {
  description = "The only security group the autoscaler may attach to workers."
  type        = string
}

variable "allowed_image_ids" {
  description = "AMIs the autoscaler may launch (the node AMI of cluster/aws-gpu.yaml)."
  type        = list(string)
}

variable "worker_instance_types" {
  description = "Instance types the autoscaler may launch: the worker types of cluster/aws-gpu.yaml."
  type        = list(string)

  validation {
    condition     = length(var.worker_instance_types) > 0 && alltrue([for t in var.worker_instance_types : !strcontains(t, "*")])
    error_message = "Name each worker instance type; no wildcards."
  }
}

variable "enable_spot" {
  description = "Allow the autoscaler to launch spot instances (the *.spot node types of cluster/aws-gpu.yaml)."
  type        = bool
  default     = true
}

variable "create_spot_service_linked_role" {
  description = "Create the EC2 spot service-linked role (AWSServiceRoleForEC2Spot); false if the account already has it."
  type        = bool
  default     = false
}
