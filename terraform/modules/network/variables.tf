variable "name" {
  description = "Name prefix of every network resource."
  type        = string
}

variable "cidr_block" {
  description = "VPC CIDR; /16 leaves room for one /24 public and one /20 private subnet per zone."
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Zones with one public and one private subnet each (pick zones that offer your GPU types)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 1 && length(var.availability_zones) <= 4
    error_message = "Give 1 to 4 availability zones."
  }
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept."
  type        = number
  default     = 365
}
