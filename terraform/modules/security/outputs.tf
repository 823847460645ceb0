output "ray_nodes_security_group_id" {
  value = aws_security_group.ray_nodes.id
}

output "bastion_security_group_id" {
  value = var.enable_bastion ? aws_security_group.bastion[0].id : null
}
