from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from datasets.exports.service import export_build, export_create, export_storage_name
from datasets.models import Export
from tests.exports.builders import build_project


def build_export(project, **options) -> Export:
    export = export_create(project=project, queue=False, **options)
    export = export_build(export_id=export.pk)
    assert export.status == Export.Status.DONE, export.error
    return export


def materialize(export: Export, folder: Path) -> Path:
    """Copy an export's files out of the storage into a folder, as a researcher would have them."""
    for entry in export.files:
        target = folder / entry["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(export_storage_name(export=export, name=entry["name"]), "rb") as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return folder


@pytest.fixture
def built(db):
    return build_project(n_images=24)


@pytest.fixture
def export_dir(built, tmp_path):
    export = build_export(built.project, formats=["coco", "shards", "imagefolder"], min_shards=4, seed=7)
    return materialize(export, tmp_path / "export")
