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
