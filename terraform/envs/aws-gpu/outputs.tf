# Read by `rayloom cluster render aws --terraform-output <(terraform output -json)`: each name here
# fills the matching {{tf.<name>}} in cluster/aws-gpu.yaml.

output "region" {
  value = var.region
}

output "availability_zones_csv" {
  value = join(",", var.availability_zones)
}

output "vpc_id" {
  value = module.network.vpc_id
}

output "private_subnet_ids" {
  value = module.network.private_subnet_ids
}

output "ray_nodes_security_group_id" {
  value = module.security.ray_nodes_security_group_id
}

output "head_instance_profile_arn" {
  value = module.iam.head_instance_profile_arn
}

output "worker_instance_profile_arn" {
  value = module.iam.worker_instance_profile_arn
}

output "serve_instance_profile_arn" {
  value = module.iam.serve_instance_profile_arn
}

output "bucket_name" {
  value = module.storage.bucket_name
}

output "s3_root" {
  value = "s3://${module.storage.bucket_name}/runs"
}

output "node_image_repository_url" {
  value = module.storage.node_image_repository_url
}

output "node_image_registry" {
  value = split("/", module.storage.node_image_repository_url)[0]
}

output "gpu_ami_id" {
  value = data.aws_ssm_parameter.gpu_ami.insecure_value
}

output "ray_auth_token_parameter" {
  value = var.auth_token_parameter
}

output "bastion_public_ip" {
  value = var.enable_bastion ? module.bastion[0].public_ip : ""
}
