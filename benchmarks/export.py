"""How fast exports write shards, and whether their memory stays flat as projects grow.

    .venv/bin/python benchmarks/export.py [--sizes 1000 10000] [--rounds 3]

For each size, in a fresh process with its own database and media folder: make a project of
that many JPEGs (320x240 to 640x480, quality 90, each with two accepted polygons), then time

* plain copying: every image file read from the storage and written to a folder, and
* an export of the same images as tar shards (``export_build`` with ``formats=["shards"]``:
  database reads, sample JSON, tar writing, sha256, publishing to the storage),

as MB of image bytes per second (three alternating rounds after ``os.sync()``, the best of
each; ``--rounds`` sets how many), milliseconds per image (and the export's CPU time per image:
every thread of this process and of the shard writer processes it forks), the peak resident
memory the export adds over what this process held before it (sampled every 5 ms), and the
largest private memory of any shard writer process (what it does not share with this one since
the fork; sampled every 25 ms). ``--processes N`` sets ``EXPORT_PROCESSES`` (default: the
setting's, one process per CPU; 1 writes the shards in this process). ``--dir`` says where the
scratch folders go. Nothing is deleted until the end of the run, and the output shows how long
creating a file takes there (``create_probe_ms``): files deleted nearby in the last minutes make
ext4's creates, and so the copy of many files, several times slower. Prints a table, then one
JSON object as the last line.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_pids() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def private_bytes(pid: int) -> int:
    """Memory of its own a child holds (private clean + dirty: not what it still shares with
    the parent since the fork)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


class PeakRss:
    """This process's peak resident memory, and the largest private memory of any of its child
    processes (the shard writers), sampled every 5 ms (children every 25 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self.child_peak = 0
        self.children = set()
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        self.start = rss_bytes()
        self.peak = self.start
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            if n % 5 == 0:
                for pid in child_pids():
                    self.children.add(pid)
                    self.child_peak = max(self.child_peak, private_bytes(pid))
            n += 1
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())


def base_jpegs(count: int = 40) -> list[bytes]:
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(0)
    out = []
    for _ in range(count):
        w, h = rng.randint(320, 640), rng.randint(240, 480)
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(8):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.ellipse([x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)],
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        img = Image.blend(img, Image.effect_noise((w, h), 30).convert("RGB"), 0.2).filter(ImageFilter.SMOOTH)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), w, h))
    return out


def unique(jpeg: bytes, n: int) -> bytes:
    """The same picture with a comment segment naming it: different bytes, same pixels."""
    comment = f"annotator benchmark image {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


QUIET_CREATE_MS = 0.05  # an empty file's create on an unperturbed ext4 here: 0.02 ms


def create_probe_ms(folder: Path, count: int) -> float:
    """Median milliseconds to create one of ``count`` empty files in ``folder`` (the files stay).

    On ext4, creating a file scans past every inode of its group deleted in the last one to six
    minutes (``recently_deleted`` in the inode allocator), so after a test suite or an earlier run
    removed thousands of files nearby, each create costs 0.3 to 0.5 ms instead of 0.02: a plain copy
    of 1,000 files then takes five to ten times as long (a deleted inode counts as recent for 60 s,
    and for 360 s while its inode table block is dirty, which any create next to it makes it).
    Waiting does not reliably clear it, since the run's own creates dirty those blocks again. The
    probe is reported; ``--dir`` moves the run elsewhere (a tmpfs such as /dev/shm has no such
    scan).
    """
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=folder))
    times = []
    for i in range(count):
        t = time.perf_counter()
        os.close(os.open(probe / str(i), os.O_CREAT | os.O_WRONLY, 0o644))
        times.append(time.perf_counter() - t)
    return round(sorted(times)[count // 2] * 1e3, 3)


def one(size: int, rounds: int = 3, scratch: Path | None = None) -> dict:
    var = Path(tempfile.mkdtemp(prefix="export-bench-", dir=scratch))
    os.environ.update({"ANNOTATOR_VAR_DIR": str(var), "SECRET_KEY": "benchmark-only-" + "x" * 40, "DEBUG": "false",
                       "SECURE_SSL_REDIRECT": "false", "DJANGO_SETTINGS_MODULE": "annotator.settings",
                       "LOG_LEVEL": "WARNING"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.storage import default_storage
    from django.core.management import call_command

    from datasets.exports.service import export_build, export_create
    from datasets.exports.streams import open_stream
    from datasets.models import Category, Image, Polygon, Project, Stage

    try:
        call_command("migrate", verbosity=0)
        owner = get_user_model().objects.create_user("bench")
        project = Project.objects.create(name="bench", owner=owner)
        cat = Category.objects.create(project=project, coco_id=1, name="thing")
        pool = base_jpegs()
        t = time.perf_counter()
        rows, total_bytes = [], 0
        for i in range(size):
            data, w, h = pool[i % len(pool)]
            data = unique(data, i)
            digest = hashlib.sha256(data).hexdigest()
            name = f"projects/{project.pk}/images/{digest[:2]}/{digest}.jpg"
            path = Path(default_storage.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            total_bytes += len(data)
            rows.append(Image(project=project, file=name, width=w, height=h, format="JPEG", file_size=len(data),
                              sha256=digest, original_name=f"{i}.jpg"))
            if len(rows) == 2000:
                Image.objects.bulk_create(rows)
                rows = []
        Image.objects.bulk_create(rows)
        polys = []
        for pk, w, h in Image.objects.filter(project=project).values_list("id", "width", "height").iterator():
            for k in range(2):
                x, y = 10 + 30 * k, 10 + 20 * k
                polys.append(Polygon(image_id=pk, category=cat, stage=Stage.VERIFICATION, made_by="w",
                                     parts=[[x, y, x + 50.5, y, x + 50.5, y + 40.25, x, y + 40.25]], area=2032.6,
                                     bbox=[x, y, 50.5, 40.25], status=Polygon.Status.ACCEPTED))
            if len(polys) >= 4000:
                Polygon.objects.bulk_create(polys)
                polys = []
        Polygon.objects.bulk_create(polys)
        setup_s = time.perf_counter() - t

        # Plain copying of the same files, through the same storage reads, and the export, in
        # alternating rounds after the setup's writes are flushed (os.sync): the best round of
        # each, so that a neighbour's burst of work or disk writeback does not decide the ratio.
        # Nothing is deleted before the end of the whole run (each round copies into its own
        # folder): deleting a round's 1,000 copies would make the next round's creates pay ext4's
        # recently-deleted-inode scan (see create_probe_ms), which is the filesystem's state, not
        # the copy's cost.
        copy_runs, shard_runs, shard_cpu = [], [], []
        mem = None
        os.sync()
        probe_ms = create_probe_ms(var, 200)
        for round_no in range(rounds):
            target = var / f"plain-copy-{round_no}"
            target.mkdir()
            os.sync()
            t = time.perf_counter()
            for name in Image.objects.filter(project=project).values_list("file", flat=True).iterator():
                with open_stream(name) as src, open(target / Path(name).name, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            copy_runs.append(time.perf_counter() - t)

            export = export_create(project=project, queue=False, formats=["shards"], min_shards=8,
                                   split_ratios={"train": 1.0, "val": 0.0, "test": 0.0})
            os.sync()
            with PeakRss() as sampled:
                t, cpu, before = time.perf_counter(), time.process_time(), os.times()
                export = export_build(export_id=export.pk)
                shard_runs.append(time.perf_counter() - t)
                after = os.times()  # the shard writer processes' CPU time, once they are reaped
                children = after.children_user + after.children_system - before.children_user - before.children_system
                shard_cpu.append(time.process_time() - cpu + children)  # every thread of every process
            mem = sampled if mem is None or sampled.peak - sampled.start > mem.peak - mem.start else mem
            assert export.status == "done", export.error
        copy_s, shards_s = min(copy_runs), min(shard_runs)
        assert export.status == "done", export.error
        shard_bytes = sum(f["size"] for f in export.files if f["name"].startswith("shards/"))
        child_mb = round(mem.child_peak / 1e6, 1) if mem.children else None
        mb = total_bytes / 1e6
        return {"images": size, "image_mb": round(mb, 1), "setup_s": round(setup_s, 1),
                "copy_mb_s": round(mb / copy_s, 1), "shards_mb_s": round(mb / shards_s, 1),
                "ratio": round(copy_s / shards_s, 3), "shards": len([f for f in export.files if f["name"].startswith("shards/")]),
                "shard_mb": round(shard_bytes / 1e6, 1), "peak_extra_rss_mb": round((mem.peak - mem.start) / 1e6, 1),
                "shard_processes": len(mem.children), "peak_child_private_mb": child_mb,
                "rss_before_export_mb": round(mem.start / 1e6, 1),
                "copy_ms_per_image": round(copy_s / size * 1e3, 3), "export_ms_per_image": round(shards_s / size * 1e3, 3),
                "export_cpu_ms_per_image": round(min(shard_cpu) / size * 1e3, 3),
                "create_probe_ms": probe_ms, "load_average": round(os.getloadavg()[0], 1)}
    finally:
        if scratch is None:
            shutil.rmtree(var, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=3, help="alternating copy/export rounds; the best of each")
    parser.add_argument("--processes", type=int, help="EXPORT_PROCESSES (default: one per CPU)")
    parser.add_argument("--dir", type=Path, help="where the scratch folders go (default: the system's temp folder)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes is not None:
        os.environ["EXPORT_PROCESSES"] = str(args.processes)
    if args.one:
        print(json.dumps(one(args.one, rounds=args.rounds, scratch=args.scratch)))
        return
    results = []
    # One scratch folder for every size, removed only at the end: a size's cleanup would slow the
    # next size's file creates (see create_probe_ms).
    scratch = Path(tempfile.mkdtemp(prefix="export-bench-", dir=args.dir))
    try:
        for size in args.sizes:
            t = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--one", str(size), "--rounds", str(args.rounds),
                                   "--scratch", str(scratch)], capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                sys.exit(f"size {size} failed:\n{done.stderr[-3000:]}")
            results.append({**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": round(time.perf_counter() - t)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Export benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          "each size in a fresh process, SQLite and local storage")
    print()
    print(f"{'images':>8} {'image MB':>9} {'copy MB/s':>10} {'shards MB/s':>12} {'ratio':>6} {'shards':>7} "
          f"{'copy ms/img':>12} {'export ms/img':>14} {'CPU ms/img':>11} {'peak extra RSS MB':>18} "
          f"{'processes':>10} {'child private MB':>17} {'create ms':>10}")
    for r in results:
        print(f"{r['images']:>8} {r['image_mb']:>9} {r['copy_mb_s']:>10} {r['shards_mb_s']:>12} {r['ratio']:>6} "
              f"{r['shards']:>7} {r['copy_ms_per_image']:>12} {r['export_ms_per_image']:>14} "
              f"{r['export_cpu_ms_per_image']:>11} {r['peak_extra_rss_mb']:>18} {r['shard_processes']:>10} "
              f"{str(r['peak_child_private_mb']):>17} {r['create_probe_ms']:>10}")
    slow = [r for r in results if r["create_probe_ms"] > QUIET_CREATE_MS]
    if slow:
        print(f"\nnote: creating an empty file took {max(r['create_probe_ms'] for r in slow)} ms (median) here: many files "
              "were deleted nearby in the last minutes (ext4 scans past them), which slows the copy baseline; "
              "run again after a few quiet minutes, or give --dir elsewhere (a tmpfs such as /dev/shm has no such scan)")
    growth = results[-1]["peak_extra_rss_mb"] - results[0]["peak_extra_rss_mb"]
    child_growth = ((results[-1]["peak_child_private_mb"] or 0) - (results[0]["peak_child_private_mb"] or 0))
    print()
    print(f"memory growth from {results[0]['images']} to {results[-1]['images']} images: {growth:.1f} MB "
          f"(this process), {child_growth:.1f} MB (the largest shard writer process)")
    print(json.dumps({"benchmark": "export", "cpus": os.cpu_count(), "processes": os.environ.get("EXPORT_PROCESSES"), "load_average": round(os.getloadavg()[0], 1),
                      "rounds": args.rounds, "results": results, "memory_growth_mb": round(growth, 1),
                      "child_memory_growth_mb": round(child_growth, 1),
                      "goal_ratio_0_8": all(r["ratio"] >= 0.8 for r in results)}))


if __name__ == "__main__":
    main()
