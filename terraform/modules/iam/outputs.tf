output "head_instance_profile_arn" {
  value = aws_iam_instance_profile.head.arn
}

output "worker_instance_profile_arn" {
  value = aws_iam_instance_profile.worker.arn
}

output "worker_role_arn" {
  value = aws_iam_role.worker.arn
}

output "serve_instance_profile_arn" {
  value = aws_iam_instance_profile.serve.arn
}

output "serve_role_arn" {
  value = aws_iam_role.serve.arn
}
