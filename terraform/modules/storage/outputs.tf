output "bucket_name" {
  value = aws_s3_bucket.data.id
}

output "bucket_arn" {
  value = aws_s3_bucket.data.arn
}

output "kms_key_arn" {
  value = aws_kms_key.data.arn
}

output "node_image_repository_url" {
  value = aws_ecr_repository.node.repository_url
}

output "node_image_repository_arn" {
  value = aws_ecr_repository.node.arn
}
