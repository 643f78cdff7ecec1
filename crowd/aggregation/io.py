"""Votes in and labels out: ``task,worker,label`` CSV files <-> integer arrays with index maps.

The aggregation functions work on three parallel integer arrays (item, worker, label), each a
dense index ``0..n-1``. :func:`read_votes` builds those arrays from a CSV file with the standard
``csv`` module and NumPy, and keeps the maps back to the original names in a :class:`Votes`.
Names are kept as strings; their order is sorted (numerically when every name is an integer), so
the same file always gives the same indices whatever the order of its rows.
"""
from __future__ import annotations

import csv
import io as _io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Votes", "encode", "read_votes", "read_truth", "write_labels", "sorted_names"]

REQUIRED_COLUMNS = ("task", "worker", "label")


@dataclass(frozen=True)
class Votes:
    """Votes as dense integer arrays, with the names behind each index."""

    items: np.ndarray  # int64, one entry per vote
    workers: np.ndarray  # int64
    labels: np.ndarray  # int64
    item_names: np.ndarray  # str, item index -> task name
    worker_names: np.ndarray  # str
    label_names: np.ndarray  # str, class index -> label as written

    @property
    def n_items(self) -> int:
        return len(self.item_names)

    @property
    def n_workers(self) -> int:
        return len(self.worker_names)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.items)

    def label_index(self, names: Iterable[str]) -> np.ndarray:
        """Indices of the given label names (``-1`` for a name never seen in the votes)."""
        return _lookup(self.label_names, np.asarray(list(names), dtype=str))

    def item_index(self, names: Iterable[str]) -> np.ndarray:
        """Indices of the given task names (``-1`` for a task without votes)."""
        return _lookup(self.item_names, np.asarray(list(names), dtype=str))


def sorted_names(names: np.ndarray) -> np.ndarray:
    """Unique names, in numeric order when all of them are integers, else in string order."""
    unique = np.unique(names)
    try:
        as_int = np.array([int(n) for n in unique])
    except ValueError:
        return unique
    return unique[np.argsort(as_int, kind="stable")]


def _lookup(sorted_or_not: np.ndarray, queries: np.ndarray) -> np.ndarray:
    order = np.argsort(sorted_or_not, kind="stable")
    keys = sorted_or_not[order]
    pos = np.searchsorted(keys, queries)
    pos_clipped = np.minimum(pos, max(len(keys) - 1, 0))
    found = (pos < len(keys)) & (keys[pos_clipped] == queries) if len(keys) else np.zeros(len(queries), bool)
    out = np.full(len(queries), -1, dtype=np.int64)
    out[found] = order[pos_clipped[found]]
    return out


def _encode_column(values: np.ndarray, names: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    if names is None:
        names = sorted_names(values)
    else:
        names = np.asarray(names, dtype=str)
        if len(np.unique(names)) != len(names):
            raise ValueError(f"the {what} names given are not unique")
    codes = _lookup(names, values)
    if (codes < 0).any():
        unknown = np.unique(values[codes < 0])
        shown = ", ".join(repr(str(u)) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(f"unknown {what}: {shown}{more} (allowed: {', '.join(map(str, names[:10]))})")
    return codes.astype(np.int64), names


def encode(
    tasks: Sequence[str] | np.ndarray,
    workers: Sequence[str] | np.ndarray,
    labels: Sequence[str] | np.ndarray,
    *,
    classes: Sequence[str] | None = None,
) -> Votes:
    """Turn three parallel sequences of names into a :class:`Votes`.

    ``classes`` fixes the label set and its order; a label outside it is an error. Without it
    the classes are the labels seen, sorted (numerically if all are integers).
    """
    t = np.asarray(tasks, dtype=str)
    w = np.asarray(workers, dtype=str)
    lab = np.asarray(labels, dtype=str)
    if not (len(t) == len(w) == len(lab)):
        raise ValueError(f"tasks, workers and labels differ in length: {len(t)}, {len(w)}, {len(lab)}")
    if len(t) == 0:
        raise ValueError("no votes: at least one task,worker,label row is needed")
    if (lab == "").any():
        raise ValueError(f"{int((lab == '').sum())} vote(s) have an empty label")
    items, item_names = _encode_column(t, None, "task")
    workers_i, worker_names = _encode_column(w, None, "worker")
    labels_i, label_names = _encode_column(lab, classes, "label")
    return Votes(items, workers_i, labels_i, item_names, worker_names, label_names)


def _open_text(source: str | Path | _io.TextIOBase):
    if isinstance(source, (str, Path)):
        return open(source, newline="", encoding="utf-8-sig")
    return source


def _read_columns(source, columns: Sequence[str]) -> list[np.ndarray]:
    handle = _open_text(source)
    try:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{_name(source)} is empty: expected a header {','.join(columns)}")
        header = [h.strip().lstrip("\ufeff").strip().lower() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{_name(source)}: header {header} lacks column(s) {missing}; expected {','.join(columns)}")
        idx = [header.index(c) for c in columns]
        rows = [r for r in reader if r and any(cell.strip() for cell in r)]
    finally:
        if isinstance(source, (str, Path)):
            handle.close()
    width = max(idx) + 1
    short = [n for n, r in enumerate(rows) if len(r) < width]
    if short:
        raise ValueError(f"{_name(source)}: row {short[0] + 2} has {len(rows[short[0]])} field(s), expected {len(header)}")
    if not rows:
        return [np.array([], dtype=str) for _ in columns]
    table = np.array(rows, dtype=object)
    return [np.char.strip(table[:, i].astype(str)) for i in idx]


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "input"


def read_votes(source: str | Path | _io.TextIOBase, *, classes: Sequence[str] | None = None) -> Votes:
    """Read a ``task,worker,label`` CSV (header required; extra columns ignored).

    Repeated task-worker rows are kept: each row is one vote.
    """
    tasks, workers, labels = _read_columns(source, REQUIRED_COLUMNS)
    if len(tasks) == 0:
        raise ValueError(f"{_name(source)} has a header but no votes")
    return encode(tasks, workers, labels, classes=classes)


def read_truth(source: str | Path | _io.TextIOBase) -> dict[str, str]:
    """Read a ``task,label`` CSV of true labels into a dict."""
    tasks, labels = _read_columns(source, ("task", "label"))
    return dict(zip(tasks.tolist(), labels.tolist()))


def write_labels(
    target: str | Path | _io.TextIOBase,
    item_names: np.ndarray,
    label_names: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    *,
    digits: int = 6,
) -> None:
    """Write ``task,label,confidence`` rows; an item whose label is ``-1`` gets an empty label."""
    names = np.asarray(label_names, dtype=str)
    text = np.where(labels >= 0, names[np.maximum(labels, 0)], "")
    conf = np.round(np.asarray(confidence, dtype=float), digits)
    handle = open(target, "w", newline="", encoding="utf-8") if isinstance(target, (str, Path)) else target
    try:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["task", "label", "confidence"])
        writer.writerows(zip(np.asarray(item_names, dtype=str).tolist(), text.tolist(), conf.tolist()))
    finally:
        if isinstance(target, (str, Path)):
            handle.close()
