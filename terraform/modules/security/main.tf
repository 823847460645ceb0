# Security groups: Ray nodes talk to each other on any TCP port (GCS 6379, dashboard 8265, client
# 10001, object manager 8076, raylet, worker ports 10002-19999, Serve 8000) but only inside this
# group. GCS 6379 and the Ray client port 10001 stay inside the group (policy CKV_RAYLOOM_2): only
# the dashboard / job API 8265 and Serve 8000 are reachable from elsewhere in the VPC. SSH only from
# the bastion.
# Nothing in this module opens a port to the internet. Rules are inline so each group is one
# resource whose whole rule set is visible (and policy-checked) in one place.

resource "aws_security_group" "ray_nodes" {
  #checkov:skip=CKV2_AWS_5:attached by the Ray launcher (cluster/aws-gpu.yaml SecurityGroupIds), not by Terraform
  name_prefix = "${var.name}-ray-nodes-"
  description = "Ray head and workers of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-ray-nodes" }

  ingress {
    description = "Ray node-to-node traffic (GCS, raylet, object manager, worker ports)"
    protocol    = "tcp"
    from_port   = 0
    to_port     = 65535
    self        = true
  }

  ingress {
    description = "Ray dashboard / job API from inside the VPC only"
    protocol    = "tcp"
    from_port   = 8265
    to_port     = 8265
    cidr_blocks = [var.vpc_cidr_block]
  }

  ingress {
    description = "Ray Serve HTTP from inside the VPC only"
    protocol    = "tcp"
    from_port   = 8000
    to_port     = 8000
    cidr_blocks = [var.vpc_cidr_block]
  }

  dynamic "ingress" {
    for_each = var.enable_bastion ? [aws_security_group.bastion[0].id] : []
    content {
      description     = "SSH for the Ray cluster launcher, through the bastion"
      protocol        = "tcp"
      from_port       = 22
      to_port         = 22
      security_groups = [ingress.value]
    }
  }

  egress {
    description = "HTTPS out through the NAT gateway (ECR, SSM, S3, package indexes)"
    protocol    = "tcp"
    from_port   = 443
    to_port     = 443
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Node-to-node and VPC-internal traffic"
    protocol    = "tcp"
    from_port   = 0
    to_port     = 65535
    cidr_blocks = [var.vpc_cidr_block]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "bastion" {
  #checkov:skip=CKV2_AWS_5:attached to the bastion instance in the bastion module
  #checkov:skip=CKV_AWS_24:SSH is open to var.admin_cidr_blocks only, whose validation rejects 0.0.0.0/0 and ::/0
  count       = var.enable_bastion ? 1 : 0
  name_prefix = "${var.name}-bastion-"
  description = "SSH bastion of ${var.name}, reachable from the admin networks only"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-bastion" }

  ingress {
    description = "SSH from the admin networks"
    protocol    = "tcp"
    from_port   = 22
    to_port     = 22
    cidr_blocks = var.admin_cidr_blocks
  }

  egress {
    description = "SSH onward to the Ray nodes"
    protocol    = "tcp"
    from_port   = 22
    to_port     = 22
    cidr_blocks = [var.vpc_cidr_block]
  }

  lifecycle {
    create_before_destroy = true
  }
}
