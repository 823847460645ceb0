provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "rayloom"
      Environment = var.name
      ManagedBy   = "terraform"
    }
  }
}
