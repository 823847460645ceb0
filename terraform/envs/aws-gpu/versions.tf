terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }

  # Keep state remote and locked for a team, e.g.:
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "rayloom/aws-gpu.tfstate"
  #   region       = "us-west-2"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}
