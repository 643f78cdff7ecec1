"""COCO JSON, one file per split, written as a stream.

Images, annotations and image-level labels go to three spool files per split while the images
are read in chunks; the final file is the header followed by the three spools, so memory never
holds a split. Annotations are the accepted polygons (``segmentation`` as polygons, or COCO's
uncompressed RLE for crowd regions); ``image_labels`` (an extra top-level list that pycocotools
ignores) carries the aggregated image-level labels of classification projects.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from datasets.exports.selection import SPLITS, image_entry

_dump = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


class CocoWriter:
    def __init__(self, *, workdir: Path, info: dict[str, Any], licenses: list[dict[str, Any]],
                 categories: list[dict[str, Any]], splits: tuple[str, ...] = SPLITS) -> None:
        self.workdir = workdir
        self.header = {"info": info, "licenses": licenses, "categories": categories}
        self.spools: dict[str, dict[str, BinaryIO]] = {}
        self.first: dict[tuple[str, str], bool] = {}
        self.counts = {s: {"images": 0, "annotations": 0, "image_labels": 0} for s in splits}
        for split in splits:
            self.spools[split] = {part: open(workdir / f"coco-{split}.{part}", "w+b") for part in ("images", "annotations", "labels")}
            for part in ("images", "annotations", "labels"):
                self.first[(split, part)] = True

    def _write(self, split: str, part: str, obj: dict[str, Any]) -> None:
        f = self.spools[split][part]
        if not self.first[(split, part)]:
            f.write(b",\n")
        self.first[(split, part)] = False
        f.write(_dump(obj).encode())

    def add(self, split: str, record: dict[str, Any], *, key: str, ext: str, license_ids: dict[str, int]) -> None:
        img = record["image"]
        self._write(split, "images", image_entry(img, key, ext, license_ids))
        self.counts[split]["images"] += 1
        for inst in record["instances"]:
            ann = {
                "id": inst["id"],
                "image_id": img.pk,
                "category_id": inst["category_id"],
                "segmentation": inst["segmentation"],
                "area": inst["area"],
                "bbox": inst["bbox"],
                "iscrowd": inst["iscrowd"],
                "points": inst["points"],
                "confidence": inst["confidence"],
            }
            self._write(split, "annotations", ann)
            self.counts[split]["annotations"] += 1
        for category_id, confidence in record["labels"]:
            self._write(split, "labels", {"image_id": img.pk, "category_id": category_id, "confidence": confidence})
            self.counts[split]["image_labels"] += 1

    def finish(self) -> dict[str, Path]:
        """Assemble each split's file; return ``{split: path}``."""
        out: dict[str, Path] = {}
        head = _dump(self.header)[:-1].encode()  # without the closing brace
        for split, parts in self.spools.items():
            path = self.workdir / f"coco-{split}.json"
            with open(path, "wb") as f:
                f.write(head)
                for name, part in (("images", "images"), ("annotations", "annotations"), ("image_labels", "labels")):
                    f.write(f',"{name}":[\n'.encode())
                    spool = parts[part]
                    spool.seek(0)
                    shutil.copyfileobj(spool, f, 1 << 20)
                    spool.close()
                    (self.workdir / f"coco-{split}.{part}").unlink()
                    f.write(b"\n]")
                f.write(b"}\n")
            out[split] = path
        return out

    def close(self) -> None:
        for parts in self.spools.values():
            for spool in parts.values():
                if not spool.closed:
                    spool.close()
