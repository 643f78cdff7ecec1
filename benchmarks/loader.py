"""How fast the loader turns an export into tensors, against Pillow's own decode rate.

    .venv/bin/python benchmarks/loader.py [--images 2000] [--batch 32]

Generates JPEGs (256x256 to 640x480, quality 90) with COCO-style polygons, writes them as our
tar shards (with the exporter's own tar writer and sample JSON) and as image files plus COCO
JSON, then measures images per second, in one run:

* the baseline: Pillow decoding the same bytes from memory to RGB on one core;
* ShardDataset through a DataLoader with 0 and 2 workers;
* CocoDataset (files + COCO JSON) through a DataLoader with 0 and 2 workers;
* the webdataset library reading our shards (decode "torchrgb8") with 0 and 2 workers;
* for reference, not a goal: two processes each running the baseline on half the images at
  once, what two cores give to plain decoding at that moment (on a shared machine, often less
  than twice one core): the ceiling for two DataLoader workers.

Rates are reported as ratios to the baseline, which every measurement process times beside its
pipeline (alternating runs): on this machine the same decode loop runs up to 30% faster or slower
from one process to the next, with where its buffers happen to lie in memory, so only a ratio
within one process compares like with like. Each pipeline is measured in several processes
(``--repeats``, default 5), run with ``PYTHONHASHSEED`` 0, 1, ... (with the code and the data
folder, the hash seed decides the layout a process draws; the JSON line gives each seed's
ratio); the table gives the median and the range of their ratios. Prints tables, then one JSON
object as the last line. Needs no Django: the loader and the tar writer are plain Python.
"""
from __future__ import annotations

import argparse
import math
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from datasets.exports.tarwriter import TarWriter  # noqa: E402
from datasets.loader import CocoDataset, ShardDataset, collate  # noqa: E402
from datasets.loader import annotator_loader  # noqa: E402


def make_image(rng: random.Random) -> tuple[bytes, int, int, list[dict]]:
    w, h = rng.randint(256, 640), rng.randint(256, 480)
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    anns = []
    for _ in range(rng.randint(1, 6)):
        cx, cy, r = rng.uniform(20, w - 20), rng.uniform(20, h - 20), rng.uniform(8, min(w, h) / 4)
        pts = []
        for k in range(12):
            a = 2 * 3.14159 * k / 12
            rr = r * rng.uniform(0.6, 1.0)
            pts += [min(max(cx + rr * math.cos(a), 0), w), min(max(cy + rr * math.sin(a), 0), h)]
        draw.polygon(list(zip(pts[0::2], pts[1::2])), fill=tuple(rng.randrange(256) for _ in range(3)))
        pts = [round(v, 2) for v in pts]  # as the exporter writes them
        xs, ys = pts[0::2], pts[1::2]
        anns.append({"category_id": rng.choice([1, 2, 3]), "segmentation": [pts],
                     "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "iscrowd": 0,
                     "area": round((max(xs) - min(xs)) * (max(ys) - min(ys)) * 0.7, 2)})
    noise = Image.effect_noise((w, h), 24).convert("RGB")
    img = Image.blend(img, noise, 0.15).filter(ImageFilter.SMOOTH)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue(), w, h, anns


def build(folder: Path, n: int, shards: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    (folder / "shards").mkdir()
    items = []
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": f"c{i}", "supercategory": ""} for i in (1, 2, 3)]}
    ann_id = 1
    for i in range(1, n + 1):
        data, w, h, anns = make_image(rng)
        key = f"{i:010d}"
        (images_dir / f"{key}.jpg").write_bytes(data)
        instances = []
        for a in anns:
            instances.append({"id": ann_id, **a, "points": []})
            coco["annotations"].append({"id": ann_id, "image_id": i, **a})
            ann_id += 1
        coco["images"].append({"id": i, "file_name": f"{key}.jpg", "width": w, "height": h})
        meta = {"image_id": i, "key": key, "file_name": f"{key}.jpg", "width": w, "height": h, "size": [h, w],
                "exif_orientation": 1, "labels": [], "instances": instances, "points": []}
        items.append((key, data, json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()))
    (folder / "coco.json").write_text(json.dumps(coco))
    per = -(-n // shards)
    entries = []
    for s in range(shards):
        chunk = items[s * per:(s + 1) * per]
        name = f"shards/train-{s:06d}.tar"
        with open(folder / name, "wb") as f:
            writer = TarWriter(f)
            for key, data, meta in chunk:
                writer.add_bytes(f"{key}.jpg", data)
                writer.add_bytes(f"{key}.json", meta)
            writer.close()
        entries.append({"name": name, "samples": len(chunk), "sha256": writer.sha256.hexdigest(), "size": writer.size,
                        "first_key": chunk[0][0], "last_key": chunk[-1][0]})
    manifest = {"format": "annotator-export", "format_version": 1, "seed": 0, "splits": {"train": {"images": n, "shards": entries}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return {"megapixels": sum(img["width"] * img["height"] for img in coco["images"]) / 1e6}


def pillow_baseline(blobs: list[bytes]) -> None:
    for b in blobs:
        img = Image.open(io.BytesIO(b))
        img = img.convert("RGB") if img.mode != "RGB" else img
        img.load()


def pillow_two_processes(blobs: list[bytes]) -> float:
    """Seconds for two forked processes to run the baseline on half the images each, at once
    (after a first pass each, as the other measurements time a second epoch)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    ready, start, done = ctx.Semaphore(0), ctx.Event(), ctx.Queue()

    def child(part: list[bytes]) -> None:
        pillow_baseline(part)
        ready.release()
        start.wait()
        pillow_baseline(part)
        done.put(time.perf_counter())

    procs = [ctx.Process(target=child, args=(blobs[k::2],)) for k in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t = time.perf_counter()
    start.set()
    end = max(done.get() for _ in procs)
    for p in procs:
        p.join()
    return end - t


def count(loader) -> int:
    n = 0
    for item in loader:
        keys = item["__key__"] if isinstance(item, dict) or hasattr(item, "keys") else None
        n += len(keys) if isinstance(keys, list) else 1
    return n


def run_one(work: Path, name: str, batch: int, rounds: int) -> dict[str, float]:
    """Time one pipeline over the whole data set and the baseline beside it, in this (fresh)
    process; returns the medians of ``rounds`` alternating runs of each (seconds of the clock and
    of this process's CPU) and the median ratio of the two in each round.

    Side by side in one process because one process is not another on this machine: the same
    decode loop takes 0.82 s in one process and 1.10 s in the next (and keeps its speed for the
    process's life), whatever the core. A ratio of two processes' times is a ratio of two such
    draws; a ratio within one process is not.

    What is timed is an epoch after the first, with persistent DataLoader workers: the steady state
    of a training run, without worker start-up (which a 2,000-image epoch would otherwise be
    dominated by). A fresh process per measurement, as a training job starts: DataLoader workers
    forked from a process that has already decoded thousands of images inherit its freed heap, and
    writing to it copies page after page (copy-on-write), which would charge the previous
    measurement's garbage to this one; so the workers start (first epoch) before the baseline
    decodes anything.
    """
    import webdataset as wds

    torch.set_num_threads(1)
    n = len(list((work / "images").glob("*.jpg")))
    blobs: list[bytes] = []
    if name == "pillow_decode_2procs":
        def fn():
            return pillow_two_processes(blobs)
    elif name.startswith("shards"):
        workers = 2 if name.endswith("workers2") else 0
        size = batch if (workers or name.endswith("batched")) else None

        loader = DataLoader(ShardDataset(work, "train", batch_size=size), batch_size=None, num_workers=workers,
                            persistent_workers=workers > 0)

        def fn():
            got = count(loader)
            assert got == n, (got, n)
    elif name.startswith("coco"):
        workers = 2 if name.endswith("workers2") else 0

        loader = DataLoader(CocoDataset(work / "images", work / "coco.json"), batch_size=batch, num_workers=workers,
                            collate_fn=collate, persistent_workers=workers > 0)

        def fn():
            got = sum(len(t) for _, t in loader)
            assert got == n
    else:
        workers = 2 if name.endswith("workers2") else 0

        urls = sorted(str(p) for p in (work / "shards").glob("*.tar"))
        ds = (wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=wds.shardlists.single_node_only)
              .decode("torchrgb8").to_tuple("jpg", "json").batched(batch, collation_fn=list, partial=True))
        loader = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0)

        def fn():
            got = sum(len(b) for b in loader)
            assert got == n, (got, n)
    if name != "pillow_decode_2procs":
        fn()  # a first epoch: page cache warm, workers started (persistent), as in training
    blobs += [p.read_bytes() for p in sorted((work / "images").glob("*.jpg"))]
    pillow_baseline(blobs)

    def timed_run(f) -> tuple[float, float]:
        t, cpu = time.perf_counter(), time.process_time()
        own = f()  # the two-process reference times itself (from both children's start)
        return (time.perf_counter() - t if own is None else own), time.process_time() - cpu

    base, pipe = [], []
    for k in range(rounds):
        if k % 2:
            pipe.append(timed_run(fn))
            base.append(timed_run(lambda: pillow_baseline(blobs)))
        else:
            base.append(timed_run(lambda: pillow_baseline(blobs)))
            pipe.append(timed_run(fn))
    return {"base": statistics.median(b for b, _ in base), "base_cpu": statistics.median(c for _, c in base),
            "wall": statistics.median(w for w, _ in pipe), "cpu": statistics.median(c for _, c in pipe),
            "ratio": statistics.median(b / w for (b, _), (w, _) in zip(base, pipe)),
            "cpu_ratio": statistics.median(b / c for (_, b), (_, c) in zip(base, pipe))}


PIPELINES = ["shards_workers0", "shards_workers0_batched", "shards_workers2", "coco_workers0", "coco_workers2",
             "webdataset_workers0", "webdataset_workers2", "pillow_decode_2procs"]


def measure(work: Path, name: str, batch: int, rounds: int, hash_seed: int) -> dict[str, float]:
    """Run one measurement process with a given ``PYTHONHASHSEED``. With the same code and data
    folder, the seed decides the order of the interpreter's allocations, hence where the decoder's
    buffers fall within their pages, which decides the speed the process keeps for life (see
    ``run_one``): the same seed and folder draw the same layout again."""
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run([sys.executable, __file__, "--run", name, "--work", str(work), "--batch", str(batch),
                           "--rounds", str(rounds)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5,
                        help="measurement processes per pipeline (PYTHONHASHSEED 0, 1, ...); the median of "
                             "their ratios is reported")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating runs of the pipeline and the baseline within each process")
    parser.add_argument("--only", nargs="+", choices=PIPELINES, help="measure only these pipelines")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.work, args.run, args.batch, args.rounds)))
        return
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        t = time.perf_counter()
        data = build(work, args.images, args.shards)
        build_s = time.perf_counter() - t
        n = args.images
        results: dict[str, float] = {}

        def rate(seconds: float) -> float:
            return n / seconds

        # Each measurement process times its pipeline and the baseline side by side (--rounds
        # alternating runs); other programs share this machine, so the whole is repeated in
        # several processes (--repeats) and the median of their ratios is reported.
        base_runs: list[float] = []
        pipelines = args.only or PIPELINES
        ratio_runs: dict[str, list[float]] = {k: [] for k in pipelines}
        # Without DataLoader workers all the work is one process's CPU time, which a busy machine
        # stretches far less than the clock: its ratio is the steadier figure under load.
        cpu_ratio_runs: dict[str, list[float]] = {k: [] for k in pipelines if k.endswith(("workers0", "batched"))}
        times: dict[str, list[float]] = {k: [] for k in pipelines}
        bases: dict[str, list[float]] = {k: [] for k in pipelines}  # the baseline beside each pipeline
        for repeat in range(args.repeats):
            for name in pipelines:
                got = measure(work, name, args.batch, args.rounds, hash_seed=repeat)
                base_runs.append(got["base"])
                times[name].append(got["wall"])
                bases[name].append(got["base"])
                ratio_runs[name].append(got["ratio"])
                if name in cpu_ratio_runs:
                    cpu_ratio_runs[name].append(got["cpu_ratio"])
        results["pillow_decode_1core"] = rate(statistics.median(base_runs))
        for name in pipelines:
            results[name] = rate(statistics.median(times[name]))
        ratios = {"pillow_decode_1core": 1.0}
        ratios.update({k: round(statistics.median(v), 3) for k, v in ratio_runs.items()})
        cpu_ratios = {k: round(statistics.median(v), 3) for k, v in cpu_ratio_runs.items()}
        spread = {k: [round(min(v), 3), round(max(v), 3)] for k, v in ratio_runs.items()}
        mp = data["megapixels"] / n
        json_parser = "msgspec" if annotator_loader._fast_json is not None else "the json module"
        jpeg_decoder = "simplejpeg" if annotator_loader._turbo is not None else "Pillow"
        print(f"Loader benchmark: {n} JPEGs (q90, mean {mp:.2f} MP), {args.shards} shards, batch {args.batch}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, targets parsed by {json_parser}, JPEGs decoded by {jpeg_decoder}; data built in {build_s:.1f}s; "
              f"load average {os.getloadavg()[0]:.1f}")
        print()
        print(f"{'pipeline':32} {'images/s':>10} {'x Pillow 1-core':>16} {'by CPU time':>12} {'processes':>14}")
        print("-" * 88)
        for k, v in results.items():
            by_cpu = f"{cpu_ratios[k]:12.3f}" if k in cpu_ratios else f"{'':12}"
            low_high = f"{spread[k][0]:.3f}-{spread[k][1]:.3f}" if k in spread else ""
            print(f"{k:32} {v:10.0f} {ratios[k]:16.3f} {by_cpu} {low_high:>14}")
        print(f"(ratios: medians over {args.repeats} processes of each process's own ratio; 'processes' is "
              "their lowest and highest)")
        # A wide spread of ratios can come from either side: give each side's span, so that a median
        # drawn from the baseline's slow processes is not read as the pipeline's speed.
        for k in pipelines:
            low, high = spread[k]
            if k != "pillow_decode_2procs" and high > 1.2 * low:
                spans = {side: round(100 * (max(v) / min(v) - 1)) for side, v in (("baseline", bases[k]), ("pipeline", times[k]))}
                print(f"caution {k}: ratios {low:.3f}-{high:.3f} across processes; there the baseline took "
                      f"{min(bases[k]):.3f}-{max(bases[k]):.3f} s (a span of {spans['baseline']}%) and {k} "
                      f"{min(times[k]):.3f}-{max(times[k]):.3f} s ({spans['pipeline']}%) an epoch, so the median is a "
                      "draw between memory layouts, not a steady figure")
        print()
        checks = {
            "shards_workers0 >= 0.95": (("shards_workers0",), lambda: ratios["shards_workers0"] >= 0.95),
            "shards_workers2 >= 1.5": (("shards_workers2",), lambda: ratios["shards_workers2"] >= 1.5),
            "shards ahead of webdataset (0 workers)": (("shards_workers0", "webdataset_workers0"),
                                                       lambda: ratios["shards_workers0"] > ratios["webdataset_workers0"]),
            "shards ahead of webdataset (2 workers)": (("shards_workers2", "webdataset_workers2"),
                                                       lambda: ratios["shards_workers2"] > ratios["webdataset_workers2"]),
        }
        goals = {k: check() for k, (needs, check) in checks.items() if all(n in results for n in needs)}
        for k, ok in goals.items():
            print(f"goal {k:45} {'met' if ok else 'NOT met'}")
        share = None
        if "shards_workers2" in ratios and "pillow_decode_2procs" in ratios:
            share = round(ratios["shards_workers2"] / ratios["pillow_decode_2procs"], 3)
            print(f"ShardDataset with 2 workers reaches {share:.3f} of two plain Pillow processes")
        print(json.dumps({"benchmark": "loader", "images": n, "cpus": os.cpu_count(),
                          "load_average": round(os.getloadavg()[0], 1),
                          "rates": {k: round(v, 1) for k, v in results.items()}, "ratios": ratios,
                          "cpu_time_ratios": cpu_ratios, "ratio_ranges": spread, "processes": args.repeats,
                          "ratios_by_hash_seed": {k: [round(r, 3) for r in v] for k, v in ratio_runs.items()},
                          "seconds_by_hash_seed": {k: {"baseline": [round(b, 3) for b in bases[k]],
                                                       "pipeline": [round(t, 3) for t in times[k]]} for k in pipelines},
                          "workers2_share_of_2procs": share, "json_parser": json_parser.removeprefix("the "), "jpeg_decoder": jpeg_decoder,
                          "goals": goals}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
