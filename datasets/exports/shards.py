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

import numpy as np

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


encode_json = _dumps


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
    # ``sample_bytes`` of every size, in whole numbers (NumPy, exact), walked 4096 at a time as
    # Python ints: the same cuts as calling it per sample, without a NumPy scalar per sample.
    needs = np.asarray(sizes, dtype=np.int64)
    needs = BLOCK + -(-needs // BLOCK) * BLOCK + BLOCK + JSON_ESTIMATE
    total = int(needs.sum())
    target = min(shard_size, max(1, total // max(1, min_shards)))
    bounds: list[tuple[int, int]] = []
    start = 0
    current_bytes = 0
    for at in range(0, len(needs), 4096):
        for i, need in enumerate(needs[at:at + 4096].tolist(), start=at):
            if i > start and current_bytes + need > target:
                bounds.append((start, i))
                start, current_bytes = i, 0
            current_bytes += need
    bounds.append((start, len(needs)))
    return bounds


_string = json.encoder.encode_basestring  # a JSON string, UTF-8 kept (C, as the encoder's own)


def sample_json(record: dict[str, Any], key: str, ext: str) -> bytes:
    """The sample's ``<key>.json``: one object, keys sorted, no spaces, UTF-8.

    Written from a template of its sorted keys, the instances spliced in as text when the
    record has ``instances_json`` (``Selection.records(..., instances_json=True)``); the same
    bytes as encoding the whole object (``sample_json_encoded``, the plain way, which any
    value of an unexpected type takes).
    """
    img = record["image"]
    instances = record.get("instances_json")
    labels = [category_id for category_id, _ in record["labels"]]
    if (instances is None or type(img.pk) is not int or type(img.width) is not int or type(img.height) is not int
            or type(img.exif_orientation) is not int or type(img.attribution) is not str
            or type(img.license) is not str or type(img.sha256) is not str
            or any(type(c) is not int for c in labels)):
        return sample_json_encoded(record, key, ext)
    points = record["points"]
    return (
        f'{{"attribution":{_string(img.attribution)},"exif_orientation":{img.exif_orientation},'
        f'"file_name":{_string(f"{key}.{ext}")},"height":{img.height},"image_id":{img.pk},'
        f'"instances":[{",".join(instances)}],"key":{_string(key)},"labels":[{",".join(map(str, labels))}],'
        f'"license":{_string(img.license)},"points":{_dumps(points) if points else "[]"},'
        f'"sha256":{_string(img.sha256)},"size":[{img.height},{img.width}],"width":{img.width}}}'
    ).encode()


def sample_json_encoded(record: dict[str, Any], key: str, ext: str) -> bytes:
    """``sample_json`` through the JSON encoder, from the record's instance dicts (or their text)."""
    img = record["image"]
    instances = record.get("instances_json")
    obj = {
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
        "instances": [] if instances is not None else record["instances"],
        "points": record["points"],
    }
    text = _dumps(obj)
    if instances:
        head, tail = text.split(',"instances":[],', 1)  # keys sorted: "instances" comes once, here
        text = f'{head},"instances":[{",".join(instances)}],{tail}'
    return text.encode()


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

    def add_file(self, *, key: str, ext: str, record: dict[str, Any], path: str) -> None:
        """:meth:`add` with the image read from a local file (``TarWriter.add_file_and_bytes``)."""
        self.writer.add_file_and_bytes(f"{key}.{ext}", path, record["image"].file_size, f"{key}.json",
                                       sample_json(record, key, ext))
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
