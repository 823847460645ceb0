variable "name" {
  description = "Name prefix."
  type        = string
}

variable "bucket_name" {
  description = "Globally unique name of the data/checkpoint bucket."
  type        = string
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept."
  type        = number
  default     = 90
}
