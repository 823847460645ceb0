"""Storage group: where runs, shards, checkpoints and models are written."""

from __future__ import annotations

from dataclasses import dataclass

from rayloom.config._validate import require


@dataclass
class StorageConfig:
    # Root for everything a run writes: a local directory or an s3:// prefix.
    root: str = "runs"
    # S3-compatible endpoint (MinIO, moto, ...); empty -> AWS. Not a secret: it is passed to
    # workers as AWS_ENDPOINT_URL. Credentials come only from the environment / AWS config.
    s3_endpoint_url: str = ""
    region: str = ""
    # Committed versions kept per artifact (models, datasets, eval runs), the current one included:
    # 2 keeps the previous version for `rayloom storage rollback` and for readers that started
    # before a re-commit. Jobs export it to workers as RAYLOOM_KEEP_VERSIONS.
    keep_versions: int = 2

    def __post_init__(self) -> None:
        require(bool(self.root), "storage.root", "must not be empty", self.root)
        require(isinstance(self.keep_versions, int) and self.keep_versions >= 1, "storage.keep_versions",
                "must be at least 1 (the current version)", self.keep_versions)
        require(
            not self.s3_endpoint_url or self.s3_endpoint_url.startswith(("http://", "https://")),
            "storage.s3_endpoint_url", "must start with http:// or https://", self.s3_endpoint_url,
        )
