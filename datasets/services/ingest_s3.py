"""The one place boto3's S3 client is built for ingestion, from settings or an explicit endpoint."""
from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings


def s3_client(*, endpoint_url: str | None = None):
    """An S3 client for ``endpoint_url``, else ``settings.AWS_S3_ENDPOINT_URL``, else AWS itself.

    Credentials come from boto3's usual chain (environment, shared files, instance role).
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.AWS_S3_ENDPOINT_URL,
        region_name=settings.AWS_S3_REGION_NAME,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60),
    )


def s3_url_parse(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an S3 URL like s3://bucket/prefix")
    return parts.netloc, parts.path.lstrip("/")
