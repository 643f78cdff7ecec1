"""Ingestion throughput and memory, beside plain file copying of the same files.

    .venv/bin/python benchmarks/ingest.py                 # 1,000 and 10,000 JPEGs
    .venv/bin/python benchmarks/ingest.py --count 200     # a quick run

For each count it writes that many JPEGs (sizes varied from 320x240 to 640x480) into a temporary
folder, then runs, each in a fresh subprocess: (1) ``images_import`` from that folder into a new
project of a fresh database (its own ANNOTATOR_VAR_DIR, migrated first), and (2) a plain
``shutil.copyfile`` of every file into another folder. It reports images per second for both,
their ratio, and the peak memory growth of each subprocess (ru_maxrss after the run less the
resident size before it), so 1,000 and 10,000 can be compared: memory must stay flat.
A table for people goes to stdout, and the LAST line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_kib() -> int:
    """The current resident set size in KiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def generate(folder: Path, count: int, seed: int = 7) -> int:
    """``count`` distinct JPEGs of varied sizes, photo-like (smooth shapes plus grain); returns
    their total bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        width, height = int(rng.integers(320, 641)), int(rng.integers(240, 481))
        coarse = rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        pixels = np.clip(base + grain, 0, 255).astype(np.uint8)
        path = folder / f"{i // 1000:03d}" / f"img-{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path, "JPEG", quality=int(rng.integers(75, 93)))
        total += path.stat().st_size
    return total


def child_ingest(folder: Path, var_dir: Path, use_tracemalloc: bool) -> dict:
    os.environ["ANNOTATOR_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from datasets.models import Project
    from datasets.services.ingest import images_import
    from datasets.services.ingest_sources import source_folder

    call_command("migrate", interactive=False, verbosity=0)
    owner = get_user_model().objects.create_user("bench", password=None)
    project = Project.objects.create(name="Benchmark", owner=owner)
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    before = max(rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    start = time.perf_counter()
    result = images_import(project=project, source=source_folder(folder))
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {
        "seconds": seconds,
        "files": result.total,
        "imported": result.imported,
        "failed": result.failed,
        "rss_before_mib": before / 1024,
        "rss_peak_growth_mib": max(0, peak_kib - before) / 1024,
        "rss_peak_mib": peak_kib / 1024,
    }
    if use_tracemalloc:
        import tracemalloc

        figures["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 1024 / 1024
    return figures


def child_copy(folder: Path, out: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    before = max(rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    start = time.perf_counter()
    for path in files:
        target = out / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "files": len(files),
        "rss_before_mib": before / 1024,
        "rss_peak_growth_mib": max(0, peak_kib - before) / 1024,
        "rss_peak_mib": peak_kib / 1024,
    }


def run_child(mode: str, folder: Path, work: Path, use_tracemalloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--work", str(work)]
    if use_tracemalloc:
        cmd.append("--tracemalloc")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, action="append", help="Images per run (repeatable). Default: 1000 and 10000.")
    parser.add_argument("--tracemalloc", action="store_true", help="Also trace Python allocations (slower).")
    parser.add_argument("--child", choices=["ingest", "copy"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "ingest":
        print(json.dumps(child_ingest(args.folder, args.work, args.tracemalloc)))
        return
    if args.child == "copy":
        print(json.dumps(child_copy(args.folder, args.work)))
        return

    counts = args.count or [1000, 10000]
    rows = []
    with tempfile.TemporaryDirectory(prefix="annotator-bench-") as tmp:
        tmp_path = Path(tmp)
        for count in counts:
            folder = tmp_path / f"images-{count}"
            t0 = time.perf_counter()
            total_bytes = generate(folder, count)
            print(f"generated {count:,} JPEGs ({total_bytes / 1e6:,.1f} MB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            ingest = run_child("ingest", folder, tmp_path / f"var-{count}", args.tracemalloc)
            copy = run_child("copy", folder, tmp_path / f"copy-{count}", False)
            assert ingest["imported"] == count, ingest
            row = {
                "count": count,
                "megabytes": round(total_bytes / 1e6, 1),
                "ingest_images_per_s": round(count / ingest["seconds"], 1),
                "copy_images_per_s": round(count / copy["seconds"], 1),
                "ingest_seconds": round(ingest["seconds"], 2),
                "copy_seconds": round(copy["seconds"], 2),
                "copy_to_ingest_ratio": round(ingest["seconds"] / copy["seconds"], 1),
                "ingest_rss_growth_mib": round(ingest["rss_peak_growth_mib"], 1),
                "copy_rss_growth_mib": round(copy["rss_peak_growth_mib"], 1),
                "ingest_rss_peak_mib": round(ingest["rss_peak_mib"], 1),
            }
            if "tracemalloc_peak_mib" in ingest:
                row["ingest_tracemalloc_peak_mib"] = round(ingest["tracemalloc_peak_mib"], 1)
            rows.append(row)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(tmp_path / f"var-{count}", ignore_errors=True)
            shutil.rmtree(tmp_path / f"copy-{count}", ignore_errors=True)

    header = f"{'images':>8} {'MB':>8} {'ingest img/s':>13} {'copy img/s':>11} {'copy is x faster':>17} {'ingest RSS +MiB':>16} {'copy RSS +MiB':>14} {'ingest peak MiB':>16}"
    print(header)
    for r in rows:
        print(
            f"{r['count']:>8,} {r['megabytes']:>8,.1f} {r['ingest_images_per_s']:>13,.1f} {r['copy_images_per_s']:>11,.1f} "
            f"{r['copy_to_ingest_ratio']:>17.1f} {r['ingest_rss_growth_mib']:>16.1f} {r['copy_rss_growth_mib']:>14.1f} {r['ingest_rss_peak_mib']:>16.1f}"
        )
    import platform

    print(json.dumps({"benchmark": "ingest", "python": platform.python_version(), "cpus": os.cpu_count(), "runs": rows}))


if __name__ == "__main__":
    main()
