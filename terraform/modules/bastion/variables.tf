variable "name" {
  description = "Name prefix."
  type        = string
}

variable "subnet_id" {
  description = "A public subnet."
  type        = string
}

variable "security_group_id" {
  description = "The bastion security group (SSH from admin networks only)."
  type        = string
}

variable "key_name" {
  description = "EC2 key pair for SSH to the bastion."
  type        = string
}

variable "instance_type" {
  description = "Bastion size."
  type        = string
  default     = "t3.micro"
}
