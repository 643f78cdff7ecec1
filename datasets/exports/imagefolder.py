"""ImageFolder for classification projects: one tar per split holding ``<class>/<key>.<ext>``.

``tar xf imagefolder/train.tar -C train`` gives the ``root/<class>/<file>`` tree that
``torchvision.datasets.ImageFolder`` reads. An image goes in when its aggregated labels name
exactly one of the exported categories; the others are counted as skipped in the manifest.
"""
from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^\w\-. ]+")


def class_folder(name: str) -> str:
    """A category name as a folder name: no slashes or control characters, never empty."""
    cleaned = _UNSAFE.sub("_", name).strip(" .") or "category"
    return cleaned[:100]


def single_label(record: dict) -> int | None:
    labels = record["labels"]
    return labels[0][0] if len(labels) == 1 else None
