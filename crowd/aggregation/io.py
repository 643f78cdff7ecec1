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
    item_names: np.ndarray  # object array of str, item index -> task name
    worker_names: np.ndarray  # object array of str
    label_names: np.ndarray  # object array of str, class index -> label as written

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
        return _lookup(self.label_names, [str(n) for n in names])

    def item_index(self, names: Iterable[str]) -> np.ndarray:
        """Indices of the given task names (``-1`` for a task without votes)."""
        return _lookup(self.item_names, [str(n) for n in names])


def _name_order(unique: list[str]) -> list[str]:
    """Numeric order when every name is an integer, else string order."""
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def sorted_names(names) -> np.ndarray:
    """Unique names, in numeric order when all of them are integers, else in string order."""
    return _names_array(_name_order(list(dict.fromkeys(str(n) for n in names))))


def _names_array(names: list[str]) -> np.ndarray:
    """Names as an object array: no copy into fixed-width UTF-32, which is slow for long URLs."""
    out = np.empty(len(names), dtype=object)
    out[:] = names
    return out


def _lookup(names: np.ndarray, queries) -> np.ndarray:
    """Index of each query in ``names`` (``-1`` when absent)."""
    position = {str(n): i for i, n in enumerate(names)}
    get = position.get
    return np.array([get(q, -1) for q in queries], dtype=np.int64)


def _encode_column(values: list[str], names, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes for ``values`` in sorted name order, through a dict (fast for long strings such
    as URLs, where sorting a NumPy string array is slow)."""
    if names is None:
        ordered = _name_order(list(dict.fromkeys(values)))  # dict.fromkeys: unique names at C speed
        position = {n: i for i, n in enumerate(ordered)}
        codes = np.fromiter(map(position.__getitem__, values), dtype=np.int64, count=len(values))
        return codes, _names_array(ordered)
    names = _names_array([str(n) for n in names])
    if len(set(names.tolist())) != len(names):
        raise ValueError(f"the {what} names given are not unique")
    codes = _lookup(names, values)
    if (codes < 0).any():
        unknown = sorted({values[i] for i in np.flatnonzero(codes < 0)})
        shown = ", ".join(repr(u) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(f"unknown {what}: {shown}{more} (allowed: {', '.join(map(str, names[:10]))})")
    return codes, names


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
    t, w, lab = (_as_str_list(x) for x in (tasks, workers, labels))
    if not (len(t) == len(w) == len(lab)):
        raise ValueError(f"tasks, workers and labels differ in length: {len(t)}, {len(w)}, {len(lab)}")
    if len(t) == 0:
        raise ValueError("no votes: at least one task,worker,label row is needed")
    empty = lab.count("")
    if empty:
        raise ValueError(f"{empty} vote(s) have an empty label")
    items, item_names = _encode_column(t, None, "task")
    workers_i, worker_names = _encode_column(w, None, "worker")
    labels_i, label_names = _encode_column(lab, classes, "label")
    return Votes(items, workers_i, labels_i, item_names, worker_names, label_names)


def _as_str_list(values) -> list[str]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return list(map(str, values))  # str() of a str is the same object: a C-speed pass


def _open_text(source: str | Path | _io.TextIOBase):
    if isinstance(source, (str, Path)):
        return open(source, newline="", encoding="utf-8-sig")
    return source


def _read_columns(source, columns: Sequence[str]) -> list[list[str]]:
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
    return [[r[i].strip() for r in rows] for i in idx]


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
    return dict(zip(tasks, labels))


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
