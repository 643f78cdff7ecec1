"""Imports from an S3 prefix against moto's real S3 server on loopback."""
from __future__ import annotations

from io import StringIO

import boto3
import pytest
from django.core.management import call_command

from datasets.models import Image, ImageImport
from datasets.services.ingest import images_import, report_message
from datasets.services.ingest_sources import source_s3
from tests.datasets.conftest import entry_for, image_bytes, jpeg_bytes, png_claiming

pytestmark = [pytest.mark.django_db, pytest.mark.services, pytest.mark.postgres_matrix]


@pytest.fixture
def bucket(moto_s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=moto_s3.url, region_name="us-east-1")
    name = f"photos-{__import__('uuid').uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="trip/day1/beach.jpg", Body=jpeg_bytes(seed=1))
    client.put_object(Bucket=name, Key="trip/day1/sea.webp", Body=image_bytes("WEBP", seed=2))
    client.put_object(Bucket=name, Key="trip/day2/huge.png", Body=png_claiming(50_000, 50_000))
    client.put_object(Bucket=name, Key="trip/readme.txt", Body=b"notes")
    client.put_object(Bucket=name, Key="other/ignored.jpg", Body=jpeg_bytes(seed=3))
    return name


def test_import_from_an_s3_prefix(project, bucket, moto_s3):
    result = images_import(project=project, source=source_s3(f"s3://{bucket}/trip/", endpoint_url=moto_s3.url))
    assert result.source == ImageImport.Source.S3
    names = sorted(e["name"] for e in result.report)
    assert names == sorted(f"s3://{bucket}/trip/{k}" for k in ("day1/beach.jpg", "day1/sea.webp", "day2/huge.png", "readme.txt"))
    assert entry_for(result.report, f"s3://{bucket}/trip/day1/beach.jpg")["status"] == "imported"
    assert entry_for(result.report, f"s3://{bucket}/trip/day1/sea.webp")["status"] == "imported"
    huge = entry_for(result.report, f"s3://{bucket}/trip/day2/huge.png")
    assert report_message(huge) == f"s3://{bucket}/trip/day2/huge.png: 2,500,000,000 pixels is over the limit of 100,000,000 (50000x50000)"
    assert "not an image" in report_message(entry_for(result.report, f"s3://{bucket}/trip/readme.txt"))
    assert set(Image.objects.filter(project=project).values_list("original_name", flat=True)) == {"beach.jpg", "sea.webp"}


def test_import_images_command_with_s3_option(project, bucket, moto_s3, settings):
    settings.AWS_S3_ENDPOINT_URL = moto_s3.url  # the endpoint may also come from settings
    out = StringIO()
    call_command("import_images", str(project.pk), s3=[f"s3://{bucket}/trip/day1"], no_progress=True, stdout=out, stderr=StringIO())
    assert "2 imported, 0 duplicate(s), 0 failed (of 2)" in out.getvalue()


def test_a_missing_bucket_fails_the_import(project, bucket, moto_s3):
    result = images_import(project=project, source=source_s3("s3://no-such-bucket-here/x", endpoint_url=moto_s3.url))
    assert result.status == ImageImport.Status.FAILED
    assert result.error.startswith("s3://no-such-bucket-here/x: cannot be listed")
    assert "NoSuchBucket" in result.error
