"""The researchers' loader on a real export: workers, ranks, epochs, resuming, checksums,
CocoDataset, transforms that move annotations with the image, and independence from Django."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

from datasets.loader import (
    CocoDataset,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ShardChecksumError,
    ShardDataset,
    ToTensor,
    collate,
    iter_tar,
    rle_to_mask,
    to_detection_target,
    to_tv_tensors,
)
from datasets.loader.annotator_loader import _round_robin_skips, rle_counts

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _keys(loader) -> list[str]:
    out = []
    for batch in loader:
        keys = batch["__key__"]
        out.extend(keys if isinstance(keys, list) else [keys])
    return out


def test_loader_imports_without_django(export_dir):
    """The shipped file runs where Django cannot even be imported."""
    code = f"""
import importlib.abc, sys
class NoDjango(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            raise ImportError("django is blocked in this test")
sys.meta_path.insert(0, NoDjango())
sys.path.insert(0, {str(export_dir)!r})
import annotator_loader as L
ds = L.ShardDataset({str(export_dir)!r}, "train", verify=True)
n = sum(1 for _ in ds)
assert n == ds.num_samples, (n, ds.num_samples)
assert not any(m == "django" or m.startswith("django.") for m in sys.modules)
print("ok", n)
"""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_two_workers_and_two_ranks_see_every_sample_exactly_once_per_epoch(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    expected = sorted(f"{i:010d}" for split in ("train",) for i in _image_ids(export_dir, split))
    assert len(manifest["splits"]["train"]["shards"]) >= 4
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ds = ShardDataset(export_dir, "train", rank=rank, world_size=2, decode="raw")
            ds.set_epoch(epoch)
            keys = _keys(DataLoader(ds, batch_size=None, num_workers=2))
            seen.append(keys)
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == expected
        orders.append(seen)
    assert orders[0] != orders[1]  # a new epoch reshuffles
    again = ShardDataset(export_dir, "train", rank=0, world_size=2, decode="raw")
    again.set_epoch(1)
    assert _keys(DataLoader(again, batch_size=None, num_workers=2)) == orders[1][0]  # and is repeatable


def _image_ids(export_dir: Path, split: str) -> list[int]:
    return [img["id"] for img in json.loads((export_dir / "coco" / f"{split}.json").read_text())["images"]]


def test_batches_from_workers_arrive_as_tensors_and_targets(export_dir):
    ds = ShardDataset(export_dir, "train", batch_size=4)
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert sum(len(b["__key__"]) for b in batches) == ds.num_samples
    for batch in batches:
        for image, target in zip(batch["image"], batch["target"]):
            assert image.dtype == torch.uint8 and image.shape == (3, target["height"], target["width"])
            assert isinstance(target["instances"], list)
    ds_pil = ShardDataset(export_dir, "train", decode="pil", batch_size=3)
    assert next(iter(DataLoader(ds_pil, batch_size=None, num_workers=1)))["image"][0].mode == "RGB"


@pytest.mark.parametrize("workers,batch_size", [(0, None), (2, None), (2, 3)])
def test_resuming_mid_epoch_gives_the_rest_of_the_epoch(export_dir, workers, batch_size):
    def run(ds):
        return list(DataLoader(ds, batch_size=None, num_workers=workers))

    full = ShardDataset(export_dir, "train", decode="raw", batch_size=batch_size)
    full.set_epoch(3)
    everything = [b["__key__"] for b in run(full)]
    cut = len(everything) // 2 + 1
    first = ShardDataset(export_dir, "train", decode="raw", batch_size=batch_size)
    first.set_epoch(3)
    taken = []
    for item in DataLoader(first, batch_size=None, num_workers=workers):
        taken.append(item["__key__"])
        if len(taken) == cut:
            break
    state = first.state_dict(position=None if workers == 0 else len(taken))
    assert state["position"] == cut and state["epoch"] == 3
    resumed = ShardDataset(export_dir, "train", decode="raw", batch_size=batch_size)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    rest = [b["__key__"] for b in run(resumed)]
    assert taken + rest == everything


def test_round_robin_skips_match_the_dataloader_order():
    assert _round_robin_skips(5, [3, 3]) == [3, 2]
    assert _round_robin_skips(5, [1, 10]) == [1, 4]
    assert _round_robin_skips(0, [4, 4]) == [0, 0]
    assert _round_robin_skips(7, [2, 2, 5]) == [2, 2, 3]


def test_a_tampered_shard_is_caught_by_its_checksum(export_dir):
    shard = sorted(export_dir.glob("shards/train-*.tar"))[1]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # one flipped byte inside the first image
    shard.write_bytes(bytes(data))
    ds = ShardDataset(export_dir, "train", verify=True, shuffle=False)
    with pytest.raises(ShardChecksumError, match=shard.name):
        ds.verify_shards()
    with pytest.raises(ShardChecksumError, match=shard.name):
        list(ds)
    assert len(list(ShardDataset(export_dir, "val", verify=True))) >= 0  # other splits still check out


def _extract_images(export_dir: Path, split: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for shard in export_dir.glob(f"shards/{split}-*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if not member.name.endswith(".json"):
                    (out / member.name).write_bytes(tar.extractfile(member).read())
    return out


def test_coco_dataset_gives_the_same_samples_as_the_shards(export_dir, tmp_path):
    images = _extract_images(export_dir, "train", tmp_path / "images")
    coco = CocoDataset(images, export_dir / "coco" / "train.json")
    shard_samples = {s["target"]["image_id"]: s for s in ShardDataset(export_dir, "train")}
    assert len(coco) == len(shard_samples)
    for i in range(len(coco)):
        image, target = coco[i]
        sample = shard_samples[target["image_id"]]
        assert torch.equal(image, sample["image"])
        assert target["size"] == sample["target"]["size"]
        strip = lambda insts: [{k: v for k, v in d.items() if k != "confidence"} for d in insts]  # noqa: E731
        assert strip(target["instances"]) == strip(sample["target"]["instances"])
        assert target["labels"] == sorted(sample["target"]["labels"])
    loader = DataLoader(coco, batch_size=4, collate_fn=collate, num_workers=0)
    images_b, targets_b = next(iter(loader))
    assert len(targets_b) == 4 and len({len(t["instances"]) for t in targets_b}) >= 1


@pytest.mark.parametrize("ring", ["ring", "no ring"])
def test_coco_batches_cross_from_workers_whole_and_intact(ring, tmp_path, monkeypatch):
    """CocoDataset through two DataLoader workers with :func:`collate` gives the batches one
    process gives: same-size images stacked, mixed sizes as a list, each batch's pixels in one
    shared piece (a slot of the worker's ring, or without it one fresh segment; never one segment
    an image), still valid after the loader and its workers are gone."""
    from PIL import Image

    if ring == "no ring":
        monkeypatch.setenv("ANNOTATOR_LOADER_RING", "0")

    sizes = [(40, 30), (40, 30), (52, 36), (40, 30), (33, 47), (52, 36), (61, 20)]
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "c", "supercategory": ""}]}
    for i, (w, h) in enumerate(sizes, start=1):
        Image.effect_noise((w, h), 50 + i).convert("RGB").save(tmp_path / f"{i}.jpg", quality=90)
        coco["images"].append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
                                    "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    dataset = CocoDataset(tmp_path, tmp_path / "coco.json")
    one = list(DataLoader(dataset, batch_size=2, collate_fn=collate, num_workers=0))
    two = list(DataLoader(dataset, batch_size=2, collate_fn=collate, num_workers=2))
    assert len(one) == len(two) == 4
    assert isinstance(two[0][0], torch.Tensor) and two[0][0].shape == (2, 3, 30, 40)  # the same size: stacked
    for (images_1, targets_1), (images_2, targets_2) in zip(one, two):
        assert targets_1 == targets_2
        assert isinstance(images_1, torch.Tensor) == isinstance(images_2, torch.Tensor)  # stacked both ways, or neither
        assert len(images_1) == len(images_2) and all(torch.equal(a, b) for a, b in zip(images_1, images_2))
        if isinstance(images_2, list) and len(images_2) > 1:
            assert len({image.untyped_storage().data_ptr() for image in images_2}) == 1  # one shared piece
    assert [t["image_id"] for _, targets in two for t in targets] == list(range(1, 8))


def _target():
    square = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
    rle_parts = [[40, 5, 55, 5, 55, 20, 40, 20]]
    rle = mask_utils.merge(mask_utils.frPyObjects(rle_parts, 48, 64))
    return {
        "image_id": 1, "size": [48, 64], "labels": [17],
        "instances": [
            {"id": 1, "category_id": 17, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0,
             "segmentation": [square], "points": [[20.0, 20.0]]},
            {"id": 2, "category_id": 3, "bbox": [40.0, 5.0, 15.0, 15.0], "area": float(mask_utils.area(rle)),
             "iscrowd": 1, "segmentation": {"size": [48, 64], "counts": rle_counts(rle)}, "points": []},
        ],
        "points": [{"category_id": 17, "x": 20.0, "y": 20.0, "iscrowd": 0}],
    }


def test_random_crop_shifts_boxes_polygons_points_and_masks_like_landmarks():
    image = torch.arange(3 * 48 * 64, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 48, 64)
    rng = random.Random(4)
    crop = RandomCrop((24, 40), generator=rng)
    probe = random.Random(4)
    top, left = probe.randint(0, 48 - 24), probe.randint(0, 64 - 40)
    out, target = crop(image, _target())
    assert out.shape == (3, 24, 40)
    assert torch.equal(out, image[:, top: top + 24, left: left + 40])
    full_mask = rle_to_mask(_target()["instances"][1]["segmentation"])
    for inst in target["instances"]:
        if inst["iscrowd"]:
            assert torch.equal(inst["mask"], full_mask[top: top + 24, left: left + 40])
        else:
            xs, ys = inst["segmentation"][0][0::2], inst["segmentation"][0][1::2]
            assert min(xs) >= 0 and max(xs) <= 40 and min(ys) >= 0 and max(ys) <= 24
            assert inst["bbox"][0] == pytest.approx(max(10 - left, 0))
            assert inst["bbox"][1] == pytest.approx(max(10 - top, 0))
            if inst["points"]:
                assert inst["points"] == [[20.0 - left, 20.0 - top]]
    for p in target["points"]:
        assert (p["x"], p["y"]) == (20.0 - left, 20.0 - top)


def test_crop_drops_instances_outside_the_window_and_clips_the_rest():
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)

    class Fixed:
        def __init__(self, values):
            self.values = list(values)

        def randint(self, a, b):
            return self.values.pop(0)

    out, target = RandomCrop((20, 20), generator=Fixed([0, 0]))(image, _target())  # top=0, left=0
    ids = [i["id"] for i in target["instances"]]
    assert ids == [1]  # the crowd region at x>=40 is gone
    assert target["instances"][0]["bbox"] == [10.0, 10.0, 10.0, 10.0]
    assert target["instances"][0]["area"] == pytest.approx(100.0)
    assert [(p["x"], p["y"]) for p in target["points"]] == [(20.0, 20.0)]  # on the window's edge: kept
    _, target = RandomCrop((20, 20), generator=Fixed([28, 44]))(image, _target())  # top=28, left=44
    assert target["points"] == [] and [i["id"] for i in target["instances"]] == []


def test_flip_resize_and_to_tensor_move_everything_together():
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)
    image[:, 10:30, 10:30] = 255
    flipped, target = RandomHorizontalFlip(p=1.0)(image, _target())
    box = target["instances"][0]["bbox"]
    assert box == [34.0, 10.0, 20.0, 20.0]
    assert torch.equal(flipped[:, 10:30, 34:54], image[:, 10:30, 10:30])
    assert target["instances"][0]["points"] == [[44.0, 20.0]]
    crowd = next(i for i in target["instances"] if i["iscrowd"])
    assert torch.equal(crowd["mask"], rle_to_mask(_target()["instances"][1]["segmentation"]).flip(-1))
    resized, target = Resize((24, 32))(flipped, target)
    assert resized.shape == (3, 24, 32)
    assert target["instances"][0]["bbox"] == pytest.approx([17.0, 5.0, 10.0, 10.0])
    assert target["size"] == [24, 32]
    tensor, _ = ToTensor()(resized, target)
    assert tensor.dtype == torch.float32 and float(tensor.max()) <= 1.0
    pil = Image_from(image)
    pil_out, pil_target = Compose([RandomHorizontalFlip(p=1.0), Resize(24), ToTensor()])(pil, _target())
    assert pil_out.shape == (3, 24, 32) and pil_target["instances"][0]["bbox"] == pytest.approx([17.0, 5.0, 10.0, 10.0])


def Image_from(tensor):
    from PIL import Image

    return Image.fromarray(tensor.permute(1, 2, 0).numpy())


def test_detection_targets_and_collate_handle_varying_instance_counts():
    t1, t2 = _target(), {**_target(), "instances": []}
    det = to_detection_target(t1)
    assert det["boxes"].tolist()[0] == [10.0, 10.0, 30.0, 30.0] and det["labels"].tolist() == [17, 3]
    assert to_detection_target(t2)["boxes"].shape == (0, 4)
    batch = collate([{"__key__": "a", "image": torch.zeros(3, 4, 4), "target": t1},
                     {"__key__": "b", "image": torch.zeros(3, 4, 4), "target": t2}])
    assert batch["image"].shape == (2, 3, 4, 4) and len(batch["target"]) == 2
    images, targets = collate([(torch.zeros(3, 4, 4), t1), (torch.zeros(3, 5, 4), t2)])
    assert isinstance(images, list) and len(targets) == 2


def test_the_torchvision_bridge_says_clearly_that_torchvision_is_missing():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs torchvision"):
            to_tv_tensors(torch.zeros(3, 4, 4, dtype=torch.uint8), _target())
    else:
        image, target = to_tv_tensors(torch.zeros(3, 48, 64, dtype=torch.uint8), _target())
        assert target["boxes"].canvas_size == (48, 64)


def test_rle_decoding_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((13, 17)) > 0.6).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))
        assert np.array_equal(rle_to_mask(rle).numpy(), mask)
        assert np.array_equal(rle_to_mask({"size": rle["size"], "counts": rle_counts(rle)}).numpy(), mask)


def test_tar_reader_matches_tarfile_with_long_names(tmp_path):
    path = tmp_path / "t.tar"
    names = ["a" * 120 + ".jpg", "dir/" + "b" * 150 + ".json", "short.txt"]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, name in enumerate(names):
            data = bytes([i]) * (i * 700 + 3)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        got = list(iter_tar(f))
    assert [n for n, _ in got] == names
    assert [len(d) for _, d in got] == [3, 703, 1403]
    pax = tmp_path / "p.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ü" * 80 + ".json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with open(pax, "rb") as f:
        assert list(iter_tar(f)) == [("ü" * 80 + ".json", b"{}")]


def test_mapped_shards_read_as_the_stream_reader_does(tmp_path, monkeypatch):
    """Shards are read through a memory map: the same members, zero-copy, pages handed back
    behind the reader, and a truncated shard refused."""
    from datasets.exports.tarwriter import TarWriter
    from datasets.loader import annotator_loader as L

    monkeypatch.setattr(L, "_RELEASE_BYTES", 8192)  # hand pages back after every few members
    ours = tmp_path / "ours.tar"
    with open(ours, "wb") as f:
        writer = TarWriter(f)
        for i in range(40):
            writer.add_bytes(f"{i:010d}.jpg", bytes([i]) * (1000 + 97 * i))
            writer.add_bytes(f"{i:010d}.json", json.dumps({"i": i}).encode())
        writer.add_bytes("x" * 120 + ".json", b"{}")  # a GNU long name
        writer.close()
    pax = tmp_path / "pax.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("ü" * 80 + ".json", "dir/k.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    for path in (ours, pax):
        with open(path, "rb") as f:
            expected = list(L.iter_samples(f))
        got = list(L._shard_samples(str(path)))
        assert [{k: bytes(v) if k != "__key__" else v for k, v in s.items()} for s in got] == expected
    assert all(isinstance(v, memoryview) for s in L._shard_samples(str(ours)) for k, v in s.items() if k != "__key__")
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    assert list(L._shard_samples(str(empty))) == []
    cut = tmp_path / "cut.tar"
    cut.write_bytes(ours.read_bytes()[:4000])  # in the middle of the second image
    for read in (lambda: list(L._shard_samples(str(cut))), lambda: list(L.iter_samples(io.BytesIO(cut.read_bytes())))):
        with pytest.raises(EOFError, match="0000000001.jpg.* is truncated"):
            read()


@pytest.mark.parametrize("parser", ["msgspec", "json module"])
def test_sample_json_parses_as_json_loads_does(parser, monkeypatch):
    import math

    from datasets.loader import annotator_loader as L
    from datasets.loader.annotator_loader import parse_json

    if parser == "msgspec":
        assert L._fast_json is not None, "msgspec is in requirements.txt: the loader should find it"
    else:
        monkeypatch.setattr(L, "_fast_json", None)
    big = 2**100 + 1  # past 64 bits: must stay an exact int (orjson would give a float)
    for text in ['{"a": [1, 2.5, -3e-2], "b": {"c": null, "d": true}, "é": "ü"}', ' {"a": 1} \n', "[]", "3.25",
                 f'{{"id": {big}, "neg": -{big}}}', '{"k": 1, "k": 2}', '"\\ud834\\udd1e"', '[1e-400, 1.7976931348623157e308]',
                 '"\\ud800"', '[1e400, -1e400]', '\ufeff[1]']:
        data = text.encode()
        assert parse_json(data) == json.loads(data)
        assert parse_json(memoryview(data)) == json.loads(data)
    assert parse_json(f'[{big}]'.encode())[0] == big and type(parse_json(f'[{big}]'.encode())[0]) is int
    assert math.isnan(parse_json(b'{"v": NaN}')["v"]) and parse_json(b"[Infinity]") == [math.inf]
    for bad in (b'{"a": 1} x', b"", b'{"a": }', b"\xff{}", b"[1,]", b"01", b'"a\x01b"', b"1" * 5000):
        with pytest.raises(ValueError) as got:
            parse_json(bad)
        with pytest.raises(ValueError) as expected:
            json.loads(bad)
        assert type(got.value) is type(expected.value)


def test_raw_samples_are_bytes(export_dir):
    sample = next(iter(ShardDataset(export_dir, "train", decode="raw", shuffle=False)))
    assert isinstance(sample["image"], bytes) and sample["image"][:2] == b"\xff\xd8"


@pytest.fixture(params=["simplejpeg", "Pillow"])
def jpeg_decoder(request, monkeypatch):
    """The loader's direct JPEG path with simplejpeg (in requirements.txt), then without it, as a
    researcher with only torch and Pillow runs it."""
    from datasets.loader import annotator_loader as L

    if request.param == "simplejpeg":
        assert L._turbo is not None, "simplejpeg is in requirements.txt: the loader should find it"
    else:
        monkeypatch.setattr(L, "_turbo", None)
    return request.param


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_direct_jpeg_path_gives_the_pixels_pillow_gives(orientation, jpeg_decoder):
    from PIL import Image, ImageOps

    from datasets.loader.annotator_loader import decode_image

    img = Image.effect_noise((48, 32), 60).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    data = buf.getvalue()
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    width, height = expected.size  # upright, as the export records it
    fast = decode_image(data, "tensor", orientation, ext="jpg", size=(width, height))
    slow = decode_image(data, "tensor", orientation)
    assert fast.shape == (3, height, width)
    assert torch.equal(fast, slow)
    assert torch.equal(fast, torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 10), (10, 20, 30, 40)).save(cmyk, "JPEG")
    assert decode_image(cmyk.getvalue(), "tensor", 1, ext="jpg", size=(20, 10)).shape == (3, 10, 20)  # falls back
    assert decode_image(data, "pil", orientation, ext="jpg", size=(width + 1, height)).size == (width, height)


def test_the_direct_jpeg_path_writes_every_pixel_or_refuses(jpeg_decoder):
    """The direct path decodes into memory it does not zero first: memory a previous image left
    full of one value must come back holding the JPEG's pixels, and a truncated JPEG must fail
    as Pillow fails, never come back as whatever the memory held."""
    from PIL import Image

    from datasets.loader.annotator_loader import decode_image

    img = Image.effect_noise((96, 64), 60).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    expected = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    for fill in (0x00, 0x5A, 0xFF):
        for _ in range(3):  # freed blocks of the decoded size, full of `fill`, for the decoder to reuse
            stale = torch.full((96 * 64 * 4,), fill, dtype=torch.uint8)
            del stale
        assert torch.equal(decode_image(data, "tensor", 1, ext="jpg", size=(96, 64)), expected)
    with pytest.raises(OSError, match="truncated"):
        decode_image(data[: len(data) // 2], "tensor", 1, ext="jpg", size=(96, 64))


def test_a_jpeg_with_corrupt_data_gives_pillows_pixels(jpeg_decoder):
    """A stray restart marker in the entropy-coded data: libjpeg warns and Pillow still decodes
    it (damaged). simplejpeg, strict, refuses it, so the loader gives Pillow's pixels, not an
    error of its own and not half-written memory."""
    from PIL import Image

    from datasets.loader import annotator_loader as L
    from datasets.loader.annotator_loader import decode_image

    rng = random.Random(7)
    img = Image.frombytes("RGB", (96, 64), bytes(rng.randrange(256) for _ in range(96 * 64 * 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    at = len(data) * 2 // 3
    data[at:at + 4] = b"\xff\xd3\x00\x11"
    data = bytes(data)
    if jpeg_decoder == "simplejpeg":
        with pytest.raises(ValueError, match="Corrupt JPEG data"):
            L._turbo.decode_jpeg(data, "RGBX")
    expected = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(decode_image(data, "tensor", 1, ext="jpg", size=(96, 64)), expected)


@pytest.mark.parametrize("kind", ["4:2:0", "4:2:2", "4:4:4", "progressive", "grayscale", "cmyk", "adobe rgb"])
def test_every_jpeg_kind_gives_pillows_pixels_through_the_loader(kind, jpeg_decoder, tmp_path):
    """Whichever decoder the loader takes, a sample's tensor holds exactly the pixels Pillow's
    ``Image.open(...).convert("RGB")`` gives, in the main process and through a DataLoader worker's
    shared batch; libjpeg-turbo would convert CMYK by another formula, so those go to Pillow."""
    from PIL import Image

    from datasets.exports.tarwriter import TarWriter

    img = Image.effect_noise((77, 45), 60).convert("RGB")
    buf = io.BytesIO()
    if kind == "grayscale":
        img.convert("L").save(buf, "JPEG", quality=90)
    elif kind == "cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=90)
    elif kind == "adobe rgb":  # stored as RGB, not YCbCr (an Adobe marker says so)
        img.save(buf, "JPEG", quality=90, keep_rgb=True)
    else:
        options = {"progressive": {"progressive": True}, "4:2:0": {"subsampling": 2}, "4:2:2": {"subsampling": 1},
                   "4:4:4": {"subsampling": 0}}[kind]
        img.save(buf, "JPEG", quality=90, **options)
    data = buf.getvalue()
    expected = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    meta = json.dumps({"image_id": 1, "width": 77, "height": 45, "instances": []}).encode()
    with open(tmp_path / "s.tar", "wb") as f:
        writer = TarWriter(f)
        for i in range(4):
            writer.add_bytes(f"{i:04d}.jpg", data)
            writer.add_bytes(f"{i:04d}.json", meta)
        writer.close()
    one = next(iter(ShardDataset([tmp_path / "s.tar"], shuffle=False)))
    assert torch.equal(one["image"], expected)
    batches = list(DataLoader(ShardDataset([tmp_path / "s.tar"], shuffle=False, batch_size=2), batch_size=None,
                              num_workers=1))
    images = [image for batch in batches for image in batch["image"]]
    assert len(images) == 4 and all(torch.equal(image, expected) for image in images)


def test_zero_copy_pixels_outlive_the_pil_image_and_cross_processes():
    import gc
    import pickle

    from PIL import Image

    from datasets.loader.annotator_loader import PackedImages, _pil_to_tensor

    img = Image.effect_noise((64, 40), 50).convert("RGB")
    expected = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    tensor = _pil_to_tensor(img)
    del img
    gc.collect()
    _ = [bytearray(64 * 40 * 4) for _ in range(50)]  # reuse freed memory, if any was freed
    assert torch.equal(tensor, expected)
    batch = PackedImages([tensor, tensor[:, 5:20, 3:30], expected.float()[:, :2, :2].to(torch.uint8)])
    back = pickle.loads(pickle.dumps(batch))
    assert all(torch.equal(a, b) for a, b in zip(batch, back))


def _pixels_by_key(loader) -> dict[str, tuple[torch.Tensor, dict]]:
    out = {}
    for batch in loader:
        for key, image, target in zip(batch["__key__"], batch["image"], batch["target"]):
            out[key] = (image, target)
    return out


def test_batches_through_the_shared_ring_equal_batches_without_workers(export_dir, monkeypatch):
    """Two workers writing into reused shared-memory slots give the pixels and targets of a
    plain in-process read; every batch is held to the end, more batches than a ring has slots,
    so a slot reused while its batch is alive would show up as changed pixels."""
    from datasets.loader import annotator_loader

    monkeypatch.setattr(annotator_loader, "_RING_SLOTS", 2)  # workers are forked: they see it

    def loader(workers: int):
        return DataLoader(ShardDataset(export_dir, "train", batch_size=1, shuffle=False), batch_size=None,
                          num_workers=workers)

    def slot_files() -> set[str]:
        return {n for n in os.listdir("/dev/shm") if n.startswith("annotator-loader-")}

    before = slot_files()
    expected = {k: (v[0].clone(), v[1]) for k, v in _pixels_by_key(loader(0)).items()}
    held = list(loader(2))  # every batch kept alive
    assert len(held) > 2 * 2 + 2
    got = {k: v for batch in held for k, v in zip(batch["__key__"], zip(batch["image"], batch["target"]))}
    assert got.keys() == expected.keys()
    for key, (image, target) in got.items():
        assert torch.equal(image, expected[key][0]), key
        assert target == expected[key][1]
    assert slot_files() <= before, "slot files are unlinked once mapped, and when their worker ends"


def test_a_ring_slot_is_free_only_when_the_last_view_of_its_batch_is_gone(export_dir):
    """The ring's contract: the training process frees a slot when the memory under the batch's
    tensors goes, so a slice kept after the batch is dropped still holds the slot."""
    import gc
    import pickle

    from datasets.loader.annotator_loader import _SharedRing

    ds = ShardDataset(export_dir, "train", batch_size=4, shuffle=False)
    samples = list(ds._raw_samples(list(range(len(ds.shards))), random.Random(0)))[:4]
    reference = [ds._decode(s)[0].clone() for s in samples]
    ring = _SharedRing(max_slots=1)
    images, targets = ds._slot_batch(samples, ring)
    assert targets == [ds._decode(s)[1] for s in samples]
    slot = images.slot
    received = pickle.loads(pickle.dumps(images))  # what the training process gets: views of the slot
    del images
    assert all(torch.equal(a, b) for a, b in zip(received, reference))
    assert slot.busy and ring.acquire(nbytes=1) is None  # the one slot is taken, none is overwritten
    corner = received[0][:, :2, :2]
    del received
    gc.collect()
    assert slot.busy, "a view of the batch still holds the slot"
    assert torch.equal(corner, reference[0][:, :2, :2])
    del corner
    gc.collect()
    assert not slot.busy
    assert ring.acquire(nbytes=1) is slot  # reused, not reallocated


def test_worker_batches_are_the_same_with_the_ring_turned_off(export_dir, monkeypatch):
    def read() -> dict:
        loader = DataLoader(ShardDataset(export_dir, "train", batch_size=3, seed=1), batch_size=None, num_workers=2)
        return {k: (v[0].clone(), v[1]) for k, v in _pixels_by_key(loader).items()}

    with_ring = read()
    monkeypatch.setenv("ANNOTATOR_LOADER_RING", "0")
    without = read()
    assert with_ring.keys() == without.keys()
    assert all(torch.equal(with_ring[k][0], without[k][0]) and with_ring[k][1] == without[k][1] for k in with_ring)


def test_the_training_process_lets_go_of_the_slots_of_ended_workers(export_dir):
    """Workers end with each epoch (no persistent workers): their slots must not stay mapped in
    the training process epoch after epoch."""
    import gc

    from datasets.loader import annotator_loader

    loader = DataLoader(ShardDataset(export_dir, "train", batch_size=2), batch_size=None, num_workers=2)
    assert len(list(loader)) > 0
    first = set(annotator_loader._opened_slots)
    assert first, "the batches came through the ring"
    gc.collect()
    assert len(list(loader)) > 0
    assert not first & set(annotator_loader._opened_slots)
