# Optional SSH bastion: the only instance with a public address. The Ray launcher reaches the
# private nodes through it (auth.ssh_proxy_command); its security group admits admin networks only.

data "aws_ssm_parameter" "ubuntu" {
  name = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
}

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_88:the bastion is the one host meant to have a public address (SSH from admin_cidr_blocks only)
  #checkov:skip=CKV2_AWS_41:the bastion only forwards SSH and needs no AWS API access
  ami                         = data.aws_ssm_parameter.ubuntu.insecure_value
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [var.security_group_id]
  key_name                    = var.key_name
  associate_public_ip_address = true
  monitoring                  = true
  ebs_optimized               = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = 16
  }

  tags = { Name = "${var.name}-bastion" }

  lifecycle {
    precondition {
      condition     = var.key_name != ""
      error_message = "Set bastion_key_name to an EC2 key pair (or enable_bastion = false)."
    }
  }
}
