variable "name" {
  description = "Name prefix."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the Ray nodes."
  type        = string
}

variable "vpc_cidr_block" {
  description = "Only this range reaches the Ray head's API ports."
  type        = string
}

variable "enable_bastion" {
  description = "Create the bastion security group and allow SSH from it to the Ray nodes."
  type        = bool
  default     = true
}

variable "admin_cidr_blocks" {
  description = "Networks allowed to SSH to the bastion (e.g. your office or VPN egress /32)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidr_blocks : !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "admin_cidr_blocks must not contain 0.0.0.0/0 or ::/0: name your own networks."
  }
}
