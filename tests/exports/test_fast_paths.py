"""The shard writer's quick ways give the bytes of its plain ones: instances and sample JSON
written as text against the JSON encoder, image files read by path against streams, and whole
exports through either."""
from __future__ import annotations

import hashlib
import io
import json
import random

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage

from datasets.exports.selection import Selection, coordinates_json, instance_json, instance_of, sample_key
from datasets.exports.shards import _dump, encode_json, sample_json, sample_json_encoded
from datasets.exports.streams import local_paths
from datasets.exports.tarwriter import TarWriter
from tests.exports.conftest import build_export


def _rounded_text(values) -> str:
    return _dump([round(float(v), 2) for v in values])


def test_coordinates_are_written_as_rounding_and_encoding_them_writes_them():
    rng = random.Random(11)
    tricky = [0, 1, 10, -0.0, 0.001, -0.001, 0.005, 0.015, 0.125, 1.005, 2.675, 0.29, 59.995, 60.5, 100.0, 1e-9,
              999_999_999.99, -999_999_999.994, 123456.785, True, 7.000000001]
    assert coordinates_json(tricky) == _rounded_text(tricky)
    for _ in range(3000):
        scale = rng.choice([1, 10, 1000, 1e5, 1e8])
        values = [rng.choice([rng.uniform(-scale, scale), round(rng.uniform(0, scale), rng.randint(0, 4)),
                              rng.randint(0, 5000), rng.randint(0, 99_999) / 1000 + 0.0005])
                  for _ in range(rng.randint(1, 40))]
        assert coordinates_json(values) == _rounded_text(values), values
    assert coordinates_json([]) == "[]"
    # Out of the range where the short way is exact, or not numbers: the caller takes the plain way.
    for values in ([1e9], [-2e12, 1.0], [float("nan")], [1.0, float("inf")], [float("-inf")], ["1.0"], [None]):
        assert coordinates_json(values) is None


def test_instances_as_text_are_the_encoded_instances():
    rows = [
        (9, 1, 5, [[2, 2, 32.123456, 3, 21.333333, 24.5]], 250.9999, [2, 2, 30.123456, 22.5], False, 0.95, 32.0, 24.0),
        (10, 1, 5, [[1, 2, 3, 4, 5, 6], [7.005, 8, 9, 10, 11, 12.5]], 12.345, [1, 2, 10, 10.5], 0, None, None, None),
        (11, 1, 5, [[0.001, 0, 5, 0, 5, 5]], 0, [0, 0, 5, 5], False, 1, None, None),  # an int confidence
        (12, 1, 5, [[10, 10, 30, 10, 30, 30, 10, 30]], 400.0, [10, 10, 20, 20], True, 0.5, 15.0, 15.0),  # crowd
        (13, 1, 5, [[1e12, 0, 5, 0, 5, 5]], 1.0, [0, 0, 5, 5], False, None, None, None),  # out of range
        (14, 1, 5, [], 0.0, [0, 0, 0, 0], False, float("nan"), None, None),
    ]
    for row in rows:
        assert instance_json(row, 17, 64, 48) == encode_json(instance_of(row, 17, 64, 48)), row


def test_instances_as_text_are_the_encoded_instances_whatever_their_numbers():
    """Every shape (a point or not, several parts, an empty part) and every kind of number (ints,
    halves, -0.0, the range's edges, nan and inf anywhere, a string) gives the encoder's bytes:
    through the one-``%`` way when the numbers allow it, the plain way otherwise."""
    rng = random.Random(5)
    specials = [0, -0.0, 0.005, -0.005, 10, 10.5, 100.0, 999_999_999.99, -999_999_999.994, 1e9, -2e12,
                float("nan"), float("inf"), float("-inf"), True, 60.50, 2.675, 1e-9, "1.5"]

    def number():
        return rng.choice([rng.choice(specials), rng.uniform(-1e4, 1e4), rng.randint(0, 5000),
                           round(rng.uniform(0, 1000), rng.randint(0, 3))])

    for i in range(3000):
        parts = [[number() for _ in range(rng.choice([0, 2, 6, 8, 13]))] for _ in range(rng.randint(1, 3))]
        point = rng.random() < 0.5
        row = (i, 1, 5, parts, number(), [number() for _ in range(4)], False,
               rng.choice([None, 0.5, 1.0, 0.123456789, float("nan")]),
               number() if point else None, number() if point else None)
        category_id = rng.choice([1, 10, 100])
        assert instance_json(row, category_id, 64, 48) == encode_json(instance_of(row, category_id, 64, 48)), row


def test_sample_json_as_text_is_the_encoded_sample(built):
    """Every sample of a project (crowd regions, several parts, points, labels, licenses) written
    from text is the JSON encoder's text of the sample's dict, as the first exporter wrote it."""
    selection = Selection(project=built.project, filters={}, ratios={"train": 1.0})
    ids = [image.pk for image in built.images]
    as_dicts = selection.records(ids)
    as_text = selection.records(ids, instances_json=True)
    attributions = iter(["é \"quoted\" \u2028", "", "CC-BY\n4.0"])
    for pk in ids:
        key = sample_key(pk)
        plain, text = as_dicts[pk], as_text[pk]
        img = plain["image"]
        if pk % 3 == 0:  # strings that need escaping, read by both
            img.attribution = text["image"].attribution = next(attributions, "x")
        expected = _dump({
            "image_id": img.pk, "key": key, "file_name": f"{key}.jpg", "width": img.width, "height": img.height,
            "size": [img.height, img.width], "exif_orientation": img.exif_orientation, "sha256": img.sha256,
            "license": img.license, "attribution": img.attribution,
            "labels": [category_id for category_id, _ in plain["labels"]], "instances": plain["instances"],
            "points": plain["points"],
        }).encode()
        assert sample_json(text, key, "jpg") == expected
        assert sample_json(plain, key, "jpg") == expected
        assert sample_json_encoded(text, key, "jpg") == expected
        assert json.loads(expected)["instances"] == json.loads(json.dumps(plain["instances"]))


@pytest.mark.parametrize("flush_bytes", [1 << 20, 4096])
def test_image_files_read_by_path_give_the_bytes_of_streams(tmp_path, flush_bytes):
    rng = random.Random(3)
    sizes = [0, 1, 511, 512, 513, 3000, 70_000, 1_500_000]
    files = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(rng.randbytes(size))
        files.append((f"{i:010d}.jpg", str(path), size, f"{i:010d}.json", b'{"n":%d}' % i * (i + 1)))
    files.append(("x" * 120 + ".jpg", files[3][1], 512, "y" * 110 + ".json", b"{}"))
    outputs = []
    for way in ("stream", "file", "sample"):
        out = io.BytesIO()
        writer = TarWriter(out, flush_bytes=flush_bytes)
        for name, path, size, json_name, data in files:
            if way == "stream":
                with open(path, "rb") as src:
                    writer.add_stream(name, src, size)
                writer.add_bytes(json_name, data)
            elif way == "file":
                writer.add_file(name, path, size)
                writer.add_bytes(json_name, data)
            else:
                writer.add_file_and_bytes(name, path, size, json_name, data)
        writer.close()
        assert writer.sha256.hexdigest() == hashlib.sha256(out.getvalue()).hexdigest()
        assert writer.size == len(out.getvalue())
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    writer = TarWriter(io.BytesIO())
    with pytest.raises(FileNotFoundError):
        writer.add_file_and_bytes("gone.jpg", str(tmp_path / "gone.jpg"), 10, "gone.json", b"{}")
    with pytest.raises(OSError, match="ended 5 bytes early"):
        writer.add_file_and_bytes("short.jpg", files[2][1], 516, "short.json", b"{}")


def test_local_paths_are_the_storage_paths(built):
    path = local_paths()
    assert path is not None
    for image in built.images:
        assert path(image.file.name) == default_storage.path(image.file.name)
    with pytest.raises(SuspiciousFileOperation):
        path("../outside.jpg")
    with pytest.raises(SuspiciousFileOperation):
        path("/etc/passwd")


def test_shards_read_by_path_and_through_streams_are_the_same_bytes(built, monkeypatch):
    """The export reads local image files by path; through the storage's streams (as on S3) it
    writes the same shards, and every shard's sha256 in the manifest is that of its file."""
    from datasets.exports import service

    def shard_files(export):
        out = {}
        for entry in export.files:
            if entry["name"].startswith("shards/"):
                with default_storage.open(f"{export.storage_prefix}/{entry['name']}", "rb") as f:
                    data = f.read()
                assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
                out[entry["name"]] = data
        return out

    by_path = shard_files(build_export(built.project, formats=["shards"], min_shards=3, seed=5))
    monkeypatch.setattr(service, "local_paths", lambda: None)
    streamed = shard_files(build_export(built.project, formats=["shards"], min_shards=3, seed=5))
    assert by_path == streamed and len(by_path) == 9


def test_shard_cuts_from_numpy_are_the_cuts_of_adding_sample_by_sample():
    """``plan_shard_bounds`` works out every sample's bytes in NumPy; the cuts are those of
    adding ``sample_bytes`` one sample at a time, as it first did."""
    import numpy as np

    from datasets.exports.shards import plan_shard_bounds, sample_bytes

    def one_by_one(sizes, shard_size, min_shards):
        if not sizes:
            return []
        target = min(shard_size, max(1, sum(map(sample_bytes, sizes)) // max(1, min_shards)))
        bounds, start, current = [], 0, 0
        for i, size in enumerate(sizes):
            need = sample_bytes(size)
            if i > start and current + need > target:
                bounds.append((start, i))
                start, current = i, 0
            current += need
        return bounds + [(start, len(sizes))]

    rng = random.Random(3)
    for _ in range(150):
        n = rng.choice([0, 1, 2, 5, 50, 4095, 4096, 4097, 9000])
        sizes = [rng.choice([0, 1, 511, 512, 513, rng.randint(1, 2_000_000)]) for _ in range(n)]
        for shard_size, min_shards in [(1024, 1), (4096, 3), (512 << 20, 8), (100_000, 4), (10**9, 4096)]:
            expected = one_by_one(sizes, shard_size, min_shards)
            assert plan_shard_bounds(sizes, shard_size=shard_size, min_shards=min_shards) == expected
            assert plan_shard_bounds(np.array(sizes, dtype=np.int64), shard_size=shard_size,
                                     min_shards=min_shards) == expected


def test_files_published_to_a_local_storage_are_moved_in_with_its_file_mode(db, tmp_path, settings, monkeypatch):
    """Once the storage made an export's folder, the next files of that folder are moved in by a
    hard link (no copy, no name checks); they end up as the storage would have saved them."""
    import errno
    import os
    import uuid

    from datasets.exports.service import _Publisher, storage_remove_prefix

    settings.FILE_UPLOAD_PERMISSIONS = 0o640
    prefix = f"exports/test-publish-{uuid.uuid4().hex[:8]}"
    publisher = _Publisher(prefix)
    made = {}
    try:
        for i in range(3):
            path = tmp_path / f"part-{i}.tar"
            path.write_bytes(b"shard %d " % i * (i + 1))
            made[f"shards/part-{i}.tar"] = path.read_bytes()
            publisher.publish(f"shards/part-{i}.tar", path)
            assert not path.exists()  # moved, not copied
        for name, data in made.items():
            stored = default_storage.path(f"{prefix}/{name}")
            assert open(stored, "rb").read() == data
            assert os.stat(stored).st_mode & 0o777 == 0o640
        assert [(f["name"], f["size"], f["sha256"]) for f in publisher.files] == [
            (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in made.items()]

        # A name that is taken already is never overwritten: the prefix is not this build's own.
        again = tmp_path / "again.tar"
        again.write_bytes(b"someone else's")
        with pytest.raises(RuntimeError, match="not private"):
            publisher.publish("shards/part-1.tar", again)
        assert open(default_storage.path(f"{prefix}/shards/part-1.tar"), "rb").read() == made["shards/part-1.tar"]

        # No hard links (the build folder on another file system): the storage saves the file.
        def cross_device(src, dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", cross_device)
        publisher.publish("shards/part-9.tar", again)
        stored = default_storage.path(f"{prefix}/shards/part-9.tar")
        assert open(stored, "rb").read() == b"someone else's"
        assert os.stat(stored).st_mode & 0o777 == 0o640
    finally:
        storage_remove_prefix(prefix)
