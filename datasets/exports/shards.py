"""WebDataset-compatible tar shards: ``<key>.<ext>`` (the original bytes) and ``<key>.json``.

Samples of a split are put in a fixed shuffled order once (a hash of the seed and the image id),
then cut into shards: no shard passes ``shard_size`` bytes (unless one image alone does), and a
split has at least ``min_shards`` shards when it has that many samples, so that as many readers
(ranks times DataLoader workers) each get whole shards.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Sequence

from datasets.exports.tarwriter import BLOCK, TarWriter

JSON_ESTIMATE = 2048  # bytes a sample's JSON member takes in the archive, for planning

_dump = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
try:  # the C encoder that ``_dump`` builds anew on every call (with a circular-reference check), built once
    _iterencode = json.encoder.c_make_encoder(
        None, _dump.__self__.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )
except (AttributeError, TypeError):  # no C accelerator: the encoder's own way, same bytes
    _iterencode = None


def _dumps(obj: dict[str, Any]) -> str:
    """``_dump(obj)``: the same text (sorted keys, no spaces, UTF-8 kept), cheaper per call."""
    if _iterencode is None:
        return _dump(obj)
    return "".join(_iterencode(obj, 0))


def sample_bytes(file_size: int) -> int:
    return BLOCK + -(-file_size // BLOCK) * BLOCK + BLOCK + JSON_ESTIMATE


def plan_shards(samples: list[tuple[int, int]], *, shard_size: int, min_shards: int) -> list[list[int]]:
    """Cut ``[(image_id, file_size), ...]`` (already in shard order) into shards of ids."""
    bounds = plan_shard_bounds([size for _, size in samples], shard_size=shard_size, min_shards=min_shards)
    return [[image_id for image_id, _ in samples[start:end]] for start, end in bounds]


def plan_shard_bounds(sizes: Sequence[int], *, shard_size: int, min_shards: int) -> list[tuple[int, int]]:
    """Where shards start and end in a split's samples (file sizes, already in shard order):
    ``[(start, end), ...]``, so that the plan itself takes no memory per image."""
    if not len(sizes):
        return []
    total = sum(sample_bytes(int(size)) for size in sizes)
    target = min(shard_size, max(1, total // max(1, min_shards)))
    bounds: list[tuple[int, int]] = []
    start = 0
    current_bytes = 0
    for i, size in enumerate(sizes):
        need = sample_bytes(int(size))
        if i > start and current_bytes + need > target:
            bounds.append((start, i))
            start, current_bytes = i, 0
        current_bytes += need
    bounds.append((start, len(sizes)))
    return bounds


def sample_json(record: dict[str, Any], key: str, ext: str) -> bytes:
    img = record["image"]
    return _dumps(
        {
            "image_id": img.pk,
            "key": key,
            "file_name": f"{key}.{ext}",
            "width": img.width,
            "height": img.height,
            "size": [img.height, img.width],
            "exif_orientation": img.exif_orientation,
            "sha256": img.sha256,
            "license": img.license,
            "attribution": img.attribution,
            "labels": [category_id for category_id, _ in record["labels"]],
            "instances": record["instances"],
            "points": record["points"],
        }
    ).encode()


@dataclass
class ShardFile:
    name: str
    writer: TarWriter
    samples: int = 0
    first_key: str = ""
    last_key: str = ""
    keys: list[str] = field(default_factory=list)

    def add(self, *, key: str, ext: str, record: dict[str, Any], image: BinaryIO) -> None:
        img = record["image"]
        self.writer.add_stream(f"{key}.{ext}", image, img.file_size)
        self.writer.add_bytes(f"{key}.json", sample_json(record, key, ext))
        if not self.samples:
            self.first_key = key
        self.last_key = key
        self.samples += 1

    def entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.writer.size,
            "samples": self.samples,
            "first_key": self.first_key,
            "last_key": self.last_key,
            "sha256": self.writer.sha256.hexdigest(),
        }
