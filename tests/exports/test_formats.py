"""The files of an export, read back by the libraries researchers use: pycocotools, webdataset,
tarfile; and reproducibility, filters, splits, shard sizes."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datasets.exports.selection import SPLITS, split_of
from datasets.exports.shards import plan_shards
from datasets.models import Image, Polygon
from tests.exports.conftest import build_export, materialize
from tests.exports.builders import add_image, add_polygon, build_project, jpeg_bytes

pytestmark = [
    pytest.mark.django_db,
    # pycocotools 2.0.11 meets NumPy 2 in annToMask: harmless, and not ours to fix.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


def test_coco_files_load_in_pycocotools_and_every_annotation_rasterises(built, export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    seen_images, seen_anns, crowd = 0, 0, 0
    for split in SPLITS:
        coco = COCO(str(export_dir / "coco" / f"{split}.json"))
        cats = coco.loadCats(coco.getCatIds())
        assert {(c["id"], c["name"], c["supercategory"]) for c in cats} == {
            (17, "cat", "animal"), (18, "dog", "animal"), (3, "car", "vehicle")}
        licenses = {lic["id"]: lic["name"] for lic in coco.dataset["licenses"]}
        for img in coco.loadImgs(coco.getImgIds()):
            row = Image.objects.get(pk=img["id"])
            assert (img["width"], img["height"]) == (row.width, row.height)
            assert licenses[img["license"]] == (row.license or "Unknown")
            assert img["attribution"] == row.attribution
            assert split_of(row.pk, manifest["split_ratios"]) == split
            seen_images += 1
        for ann in coco.loadAnns(coco.getAnnIds()):
            poly = Polygon.objects.get(pk=ann["id"])
            assert poly.status == Polygon.Status.ACCEPTED
            mask = coco.annToMask(ann)
            img = coco.imgs[ann["image_id"]]
            assert mask.shape == (img["height"], img["width"])
            assert mask.sum() > 0
            if ann["iscrowd"]:
                crowd += 1
                assert isinstance(ann["segmentation"]["counts"], list)  # uncompressed, as COCO's crowds
                assert mask.sum() == ann["area"]
                rle = mask_utils.encode(np.asfortranarray(mask))
                assert list(mask_utils.toBbox(rle)) == pytest.approx(ann["bbox"])
            else:
                # Rasterised polygons lose at most their boundary pixels.
                assert abs(mask.sum() - ann["area"]) <= 0.5 * ann["area"] + 40
                x, y, w, h = ann["bbox"]
                ys, xs = np.nonzero(mask)
                assert xs.min() >= int(x) - 1 and xs.max() <= x + w + 1
                assert ys.min() >= int(y) - 1 and ys.max() <= y + h + 1
            seen_anns += 1
        assert len(coco.dataset["image_labels"]) == manifest["splits"][split]["coco"]["image_labels"]
    assert seen_images == len(built.images)
    assert seen_anns == built.accepted
    assert crowd == 6


def test_webdataset_reads_the_shards_unmodified(built, export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    originals = {img.pk: img.sha256 for img in built.images}
    total = 0
    for split in SPLITS:
        shards = manifest["splits"][split]["shards"]
        if not shards:
            continue
        urls = [str(export_dir / s["name"]) for s in shards]
        samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        assert len(samples) == sum(s["samples"] for s in shards) == manifest["splits"][split]["images"]
        for sample in samples:
            meta = json.loads(sample["json"])
            image_bytes = sample.get("jpg", sample.get("png"))
            assert hashlib.sha256(image_bytes).hexdigest() == originals[meta["image_id"]]  # never re-encoded
            assert sample["__key__"] == f"{meta['image_id']:010d}" and "." not in sample["__key__"]
            assert PILImage.open(io.BytesIO(image_bytes)).size == (meta["width"], meta["height"])
        decoded = next(iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb8")))
        assert decoded.get("jpg", decoded.get("png")).ndim == 3
        keys_in_order = [s["__key__"] for s in samples]
        for shard in shards:
            assert shard["first_key"] in keys_in_order and shard["last_key"] in keys_in_order
        total += len(samples)
    assert total == len(built.images)
    png = [s for s in wds.WebDataset([str(p) for p in sorted(export_dir.glob("shards/*.tar"))], shardshuffle=False,
                                     empty_check=False) if "png" in s]
    assert len(png) == 1  # the PNG kept its own extension


@pytest.mark.parametrize("flush_bytes", [1 << 20, 4096])
def test_the_tar_writer_writes_the_headers_tarfile_builds(flush_bytes):
    """Member by member what ``tarfile`` builds (ustar, GNU for long names), whether members
    arrive as bytes or streams, fit a buffer or not; its sha256 and size are of those bytes."""
    import random

    from datasets.exports.tarwriter import FIXED_MTIME, TarWriter

    rng = random.Random(7)
    members = [(f"{i:010d}.{ext}", rng.randbytes(size), i % 2 == 0) for i, (ext, size) in enumerate(
        [("jpg", 0), ("json", 1), ("jpg", 511), ("json", 512), ("png", 513), ("jpg", 70_000), ("jpg", 1_500_000)])]
    members.append(("x" * 120 + ".json", b"{}", False))
    out = io.BytesIO()
    writer = TarWriter(out, flush_bytes=flush_bytes)
    expected = b""
    for name, data, as_stream in members:
        if as_stream:
            writer.add_stream(name, io.BytesIO(data + b"not this"), len(data))
        else:
            writer.add_bytes(name, data)
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), FIXED_MTIME, 0o644, "annotator", "annotator"
        if len(name) < 100:
            header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))
            header[329:345] = b"0000000\0" * 2  # device numbers written out, as the first writer did
            header[148:156] = b" " * 8
            header[148:156] = b"%06o\0 " % sum(header)
        else:
            header = info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")
        expected += bytes(header) + data + bytes(-len(data) % 512)
    writer.close()
    expected += bytes(1024)
    assert out.getvalue() == expected
    assert writer.sha256.hexdigest() == hashlib.sha256(expected).hexdigest() and writer.size == len(expected)
    with pytest.raises(OSError, match="ended 5 bytes early"):
        TarWriter(io.BytesIO()).add_stream("short.jpg", io.BytesIO(b"12345"), 10)


def test_tar_members_have_fixed_order_owner_and_time(export_dir):
    for path in sorted(export_dir.glob("shards/*.tar")):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "annotator" and m.mtime == 1_700_000_000 for m in members)
        keys = [n.split(".")[0] for n in names]
        assert keys[0::2] == keys[1::2]  # image then json of the same key
        assert all(n.endswith((".jpg", ".png")) for n in names[0::2]) and all(n.endswith(".json") for n in names[1::2])


def test_manifest_describes_every_file_with_size_and_sha256(built, export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["seed"] == 7
    assert [c["id"] for c in manifest["class_map"]] == [3, 17, 18]
    assert [c["index"] for c in manifest["class_map"]] == [0, 1, 2]
    names = {f["name"] for f in manifest["files"]}
    assert "annotator_loader.py" in names and "manifest.json" not in names
    for entry in manifest["files"]:
        data = (export_dir / entry["name"]).read_bytes()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    loader = Path(__file__).resolve().parents[2] / "datasets" / "loader" / "annotator_loader.py"
    assert (export_dir / "annotator_loader.py").read_bytes() == loader.read_bytes()
    for split in SPLITS:
        shards = manifest["splits"][split]["shards"]
        assert sum(s["samples"] for s in shards) == manifest["splits"][split]["images"]


def test_the_same_inputs_give_byte_identical_files(built, tmp_path):
    options = dict(formats=["coco", "shards", "imagefolder"], min_shards=3, seed=11)
    first = build_export(built.project, **options)
    second = build_export(built.project, **options)
    assert (first.number, second.number) == (1, 2)
    assert first.storage_prefix != second.storage_prefix
    assert first.files == second.files
    a = materialize(first, tmp_path / "a")
    b = materialize(second, tmp_path / "b")
    for entry in first.files:
        assert (a / entry["name"]).read_bytes() == (b / entry["name"]).read_bytes(), entry["name"]
    other_seed = build_export(built.project, **{**options, "seed": 12})
    c = materialize(other_seed, tmp_path / "c")
    for split in SPLITS:  # the seed orders shard samples; it moves no image to another split
        left, right = (json.loads((d / "coco" / f"{split}.json").read_text()) for d in (a, c))
        assert left["images"] == right["images"] and left["annotations"] == right["annotations"]
    assert [f["sha256"] for f in other_seed.files if f["name"].startswith("shards/")] != [
        f["sha256"] for f in first.files if f["name"].startswith("shards/")]


def test_splits_follow_a_hash_of_the_image_id_and_the_ratios():
    ratios = {"train": 0.7, "val": 0.2, "test": 0.1}
    splits = [split_of(i, ratios) for i in range(1, 20001)]
    assert splits == [split_of(i, ratios) for i in range(1, 20001)]
    for name, share in ratios.items():
        assert abs(splits.count(name) / len(splits) - share) < 0.015
    assert {split_of(i, {"train": 1.0, "val": 0.0, "test": 0.0}) for i in range(500)} == {"train"}


def test_splits_and_shard_order_are_those_of_earlier_versions():
    """An image keeps its split from one version of Annotator to the next, as from one export to
    the next: these are the splits and the shard order key that the first versions computed."""
    from datasets.exports.selection import shuffle_key

    letters = {"train": "T", "val": "V", "test": "E"}
    splits = "".join(letters[split_of(i, {"train": 0.6, "val": 0.2, "test": 0.2})] for i in range(1, 41))
    assert splits == "TETTTTVTETEVTTVTTTVVETETETEVTTVTTTTTVVTT"
    assert shuffle_key(12345, 7).hex() == "1b98a2507dea9eba4c2eace3"


def test_shards_respect_the_size_limit_and_the_reader_count():
    samples = [(i, 10_000 + (i * 7919) % 50_000) for i in range(1, 301)]
    plan = plan_shards(samples, shard_size=400_000, min_shards=2)
    assert [i for shard in plan for i in shard] == [i for i, _ in samples]
    assert all(sum(s for i, s in samples if i in set(shard)) < 400_000 for shard in plan)
    assert len(plan_shards(samples, shard_size=10**12, min_shards=16)) >= 16
    assert len(plan_shards(samples[:3], shard_size=10**12, min_shards=16)) == 3


def test_sample_json_through_the_prebuilt_encoder_is_the_same_text():
    import random

    from datasets.exports.shards import _dump, _dumps

    rng = random.Random(5)
    for _ in range(500):
        value = {"ü": [round(rng.uniform(-1e4, 1e4), 2) for _ in range(rng.randint(0, 30))],
                 "a": {"z": None, "b": True, "n": rng.randint(-10**20, 10**20), "s": "é\"\n\u2028"},
                 "f": rng.choice([0.1, 1e300, -0.0, 5.0, float("inf")]), "l": [[1, 2.5], []]}
        assert _dumps(value) == _dump(value)


def test_the_shard_order_in_arrays_is_the_order_of_sorting_by_shuffle_key():
    """The exporter keeps its index in arrays; the order and the cuts are those of sorting
    ``(id, size)`` pairs by ``shuffle_key`` and cutting them with ``plan_shards``."""
    from array import array

    from datasets.exports.selection import shuffle_key, shuffled
    from datasets.exports.shards import plan_shard_bounds

    ids = [i * 37 + 5 for i in range(2000)]
    sizes = [1_000 + (i * 7919) % 90_000 for i in ids]
    for seed in (0, 42):
        expected = sorted(zip(ids, sizes), key=lambda s: shuffle_key(s[0], seed))
        ordered_ids, ordered_sizes = shuffled(array("q", ids), array("q", sizes), seed)
        assert list(zip(ordered_ids.tolist(), ordered_sizes.tolist())) == expected
        for shard_size, readers in ((2_000_000, 8), (10**12, 16), (50_000, 1)):
            bounds = plan_shard_bounds(ordered_sizes, shard_size=shard_size, min_shards=readers)
            assert [ordered_ids[a:b].tolist() for a, b in bounds] == plan_shards(
                expected, shard_size=shard_size, min_shards=readers)
    assert [a.tolist() for a in shuffled(array("q"), array("q"), 0)] == [[], []]


def test_shard_files_stay_under_the_shard_size(built, tmp_path):
    export = build_export(built.project, formats=["shards"], min_shards=1, shard_size=16 * 1024)
    shards = [f for f in export.files if f["name"].startswith("shards/")]
    assert len(shards) > 3
    assert all(f["size"] <= 16 * 1024 for f in shards)


def test_filters_keep_confident_annotations_of_chosen_categories(built, tmp_path):
    export = build_export(built.project, formats=["coco"], filters={"min_confidence": 0.9, "categories": [17]},
                          split_ratios={"train": 1.0, "val": 0.0, "test": 0.0})
    folder = materialize(export, tmp_path / "f")
    coco = COCO(str(folder / "coco" / "train.json"))
    assert coco.getCatIds() == [17]
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(a["confidence"] >= 0.9 and a["category_id"] == 17 for a in anns)
    assert len(coco.getImgIds()) == len(built.images)


def test_the_filters_of_one_export_do_not_carry_over_to_the_next(built, tmp_path):
    """The chunk queries are compiled once per process; each export still gets its own
    categories and confidence filter, and another project's export its own categories."""
    def annotations(export, name):
        coco = COCO(str(materialize(export, tmp_path / name) / "coco" / "train.json"))
        return coco, coco.loadAnns(coco.getAnnIds())

    options = {"formats": ["coco"], "split_ratios": {"train": 1.0, "val": 0.0, "test": 0.0}}
    _, narrow = annotations(build_export(built.project, filters={"min_confidence": 0.9, "categories": [17]},
                                         **options), "narrow")
    coco, everything = annotations(build_export(built.project, **options), "all")
    assert narrow and all(a["category_id"] == 17 and a["confidence"] >= 0.9 for a in narrow)
    assert {a["category_id"] for a in everything} == {3, 17, 18} and coco.getCatIds() == [3, 17, 18]
    assert len(everything) == built.accepted and any(a["confidence"] == 0.5 for a in everything)
    other = build_project(n_images=3, name="Other", seed=4)
    _, theirs = annotations(build_export(other.project, **options), "other")
    assert len(theirs) == other.accepted and {a["category_id"] for a in theirs} == {3, 17, 18}
    assert {a["image_id"] for a in theirs} == {img.pk for img in other.images}


def test_complete_stages_filter_drops_images_still_in_segmentation(built, tmp_path):
    waiting = built.images[0]  # it has a pending polygon
    Polygon.objects.filter(status=Polygon.Status.PENDING).exclude(image=waiting).delete()
    export = build_export(built.project, formats=["coco"], filters={"complete_stages": ["segmentation"]},
                          split_ratios={"train": 1.0, "val": 0.0, "test": 0.0})
    coco = COCO(str(materialize(export, tmp_path / "f") / "coco" / "train.json"))
    assert waiting.pk not in coco.getImgIds() and len(coco.getImgIds()) == len(built.images) - 1


def test_imagefolder_holds_single_label_images_by_class(built, export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    found = {}
    for split in SPLITS:
        with tarfile.open(export_dir / "imagefolder" / f"{split}.tar") as tar:
            for m in tar.getmembers():
                cls, name = m.name.split("/")
                found[int(name.split(".")[0])] = cls
        entry = manifest["splits"][split]["imagefolder"]
        assert entry["samples"] + entry["skipped"] == manifest["splits"][split]["images"]
    expected = {img.pk: ("cat" if i % 2 == 0 else "dog") for i, img in enumerate(built.images) if i % 3 != 0}
    assert found == expected


def test_an_export_of_a_missing_image_file_fails_and_leaves_no_files(db, tmp_path):
    b = build_project(n_images=4)
    default_storage.delete(b.images[2].file.name)
    from datasets.exports.service import export_build, export_create

    export = export_build(export_id=export_create(project=b.project, queue=False, formats=["shards"]).pk)
    assert export.status == "failed" and export.error and export.files == []
    dirs, files = default_storage.listdir(export.storage_prefix + "/shards") if default_storage.exists(
        export.storage_prefix + "/shards") else ([], [])
    assert files == []


def test_a_running_export_stops_when_cancelled(db, settings, monkeypatch):
    settings.EXPORT_PROGRESS_SECONDS = 0
    b = build_project(n_images=6)
    from datasets.exports import service

    export = service.export_create(project=b.project, queue=False)
    real_step = service._Progress.step
    calls = {"n": 0}

    def step(self, n=1):
        calls["n"] += 1
        if calls["n"] == 3:  # someone presses cancel while it runs
            service.export_cancel(export=service.Export.objects.get(pk=export.pk))
        return real_step(self, n)

    monkeypatch.setattr(service._Progress, "step", step)
    export = service.export_build(export_id=export.pk)
    assert export.status == "cancelled" and export.files == []
    assert not default_storage.exists(export.storage_prefix + "/coco/train.json")


def test_a_pending_export_cancelled_is_never_built(db):
    b = build_project(n_images=2)
    from datasets.exports import service

    export = service.export_create(project=b.project, queue=False)
    assert service.export_cancel(export=export).status == "cancelled"
    assert service.export_build(export_id=export.pk).status == "cancelled"
    with pytest.raises(Exception):
        service.export_cancel(export=export)


def test_options_are_checked(built):
    from django.core.exceptions import ValidationError

    from datasets.exports.service import export_create

    for bad in ({"formats": ["pdf"]}, {"split_ratios": {"train": 0.5, "val": 0.1, "test": 0.1}},
                {"filters": {"categories": [99]}}, {"filters": {"min_confidence": 2}},
                {"filters": {"complete_stages": ["lunch"]}}, {"min_shards": 0}):
        with pytest.raises(ValidationError):
            export_create(project=built.project, queue=False, **bad)


def test_orientation_and_extension_of_an_added_png(db, tmp_path):
    b = build_project(n_images=1, with_png=False)
    img = add_image(b.project, jpeg_bytes(40, 30, 5, "PNG"), width=40, height=30, fmt="PNG", name="p")
    add_polygon(img, b.categories[0], [[1, 1, 20, 1, 20, 20]])
    export = build_export(b.project, formats=["shards"], split_ratios={"train": 1.0, "val": 0.0, "test": 0.0})
    folder = materialize(export, tmp_path / "x")
    names = [m for p in folder.glob("shards/*.tar") for m in tarfile.open(p).getnames()]
    assert f"{img.pk:010d}.png" in names
