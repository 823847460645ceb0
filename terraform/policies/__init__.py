"""Custom checkov policies for rayloom's Terraform (loaded with --external-checks-dir)."""
