"""manifest.json: what an export holds, for people and for the loader and download client.

No export number, timestamp or storage path goes in, so the same inputs give the same bytes.
"""
from __future__ import annotations

import json
from typing import Any

FORMAT = "annotator-export"
FORMAT_VERSION = 1
LOADER_NAME = "annotator_loader.py"
MANIFEST_NAME = "manifest.json"


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def build_manifest(
    *,
    project: dict[str, Any],
    formats: list[str],
    filters: dict[str, Any],
    split_ratios: dict[str, float],
    seed: int,
    shard_size: int,
    min_shards: int,
    class_map: list[dict[str, Any]],
    splits: dict[str, dict[str, Any]],
    files: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "project": project,
        "formats": formats,
        "filters": filters,
        "split_ratios": split_ratios,
        "seed": seed,
        "shard_size": shard_size,
        "min_shards": min_shards,
        "class_map": class_map,
        "splits": splits,
        "loader": next(f for f in files if f["name"] == LOADER_NAME),
        "files": files,
    }
