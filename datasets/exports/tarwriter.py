"""Reproducible tar files: members in the order written, fixed owner, mode and time.

Headers are built directly for ustar from a fixed template (``tarfile.TarInfo.tobuf`` for GNU
long names past 100 characters). Members are gathered in one of two preallocated 1 MB buffers,
image files read straight into it (``readinto`` from a stream, or ``os.readv`` from a local
path, with the sample's JSON in the same step: no bytes object per image); a full buffer goes
to the file and into the sha256 on a background thread (both release the GIL) while the other
buffer fills, so writing and hashing overlap with the caller's next members (database reads,
JSON) and the digest costs no second read. The bytes are exactly those of writing member by
member.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

FIXED_MTIME = 1_700_000_000  # 2023-11-14: any fixed time; tar tools dislike 0
BLOCK = 512
COPY_CHUNK = 1 << 20
FLUSH_BYTES = 1 << 20  # buffered bytes handed to the background writer at once


def _field(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


# Everything of a ustar header but the name, size and checksum, fixed once.
_MODE, _IDS, _MTIME = _field(0o644, 8), _field(0, 8), _field(FIXED_MTIME, 12)
_TAIL = (b"0" + b"\0" * 100 + b"ustar\x0000" + b"annotator".ljust(32, b"\0") * 2 + _field(0, 8) * 2
         + b"\0" * 155 + b"\0" * 12)


_HEAD_SUM = sum(_MODE + _IDS + _IDS + _MTIME) + sum(_TAIL) + 8 * 32  # the checksum field counts as spaces


def _ustar_header(name: bytes, size: int) -> bytes:
    """A POSIX ustar header for a regular file with our fixed owner, mode and time (what
    ``TarInfo.tobuf`` builds, without its per-call cost): only the name and size vary, so the
    checksum is the template's plus theirs."""
    size_field = b"%011o\0" % size
    checksum = _HEAD_SUM + sum(name) + sum(size_field)
    return name.ljust(100, b"\0") + _MODE + _IDS + _IDS + size_field + _MTIME + b"%06o\0 " % checksum + _TAIL


_ZEROS = bytes(2 * BLOCK)
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _read_file(view: memoryview, path: str, name: str) -> None:
    """Fill ``view`` from the start of the file at ``path`` (open, read, close)."""
    size = len(view)
    fd = os.open(path, _O_READ)
    try:
        got = os.readv(fd, (view,))
        while got < size:
            n = os.readv(fd, (view[got:],))
            if not n:
                raise OSError(f"{name}: the source ended {size - got} bytes early")
            got += n
    finally:
        os.close(fd)


class TarWriter:
    """A reproducible tar written to ``f``; ``sha256`` and ``size`` are final after :meth:`close`.

    Two buffers of ``flush_bytes`` are held: the one being filled and the one being written, so
    memory stays flat whatever the archive's size. A member larger than a buffer goes to the
    background writer on its own.
    """

    def __init__(self, f: BinaryIO, *, flush_bytes: int = FLUSH_BYTES, scratch: "TarScratch | None" = None) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._scratch = scratch
        self._pending: Future | None = None
        if scratch is not None:  # buffers and thread of a previous writer, already allocated
            flush_bytes = len(scratch.buffers[0])
            self._buffer, self._spare = scratch.buffers
            self._pool: ThreadPoolExecutor | None = scratch.pool
            # The previous writer's last hand-off, if it did not wait for it (``close(wait=False)``):
            # ``_spare`` is free once it is written, which the first ``_submit`` waits for.
            self._pending, scratch.pending = scratch.pending, None
        else:
            self._buffer = memoryview(bytearray(flush_bytes))  # being filled
            self._spare = memoryview(bytearray(flush_bytes))  # being written, or free
            self._pool = None
        self._capacity = flush_bytes
        self._pos = 0

    def _out(self, data: bytes | memoryview) -> None:
        n = len(data)
        self.size += n
        if n > self._capacity - self._pos:
            self._flush()
            if n > self._capacity:
                self._submit(bytes(data))
                return
        self._buffer[self._pos:self._pos + n] = data
        self._pos += n

    def _sink(self, data: bytes | memoryview) -> None:
        self.f.write(data)
        self.sha256.update(data)

    def _submit(self, data: bytes | memoryview) -> None:
        """Hand ``data`` to the background thread, after the previous hand-off is written."""
        self._wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tarwriter")
        self._pending = self._pool.submit(self._sink, data)

    def _flush(self) -> None:
        """Send the filled part of the buffer; fill the other one (free once the previous
        hand-off is written, which ``_submit`` waits for) from now on."""
        if not self._pos:
            return
        self._submit(self._buffer[:self._pos])
        self._buffer, self._spare = self._spare, self._buffer
        self._pos = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a failed write here

    def _header(self, name: str, size: int) -> None:
        encoded = name.encode("utf-8")
        if len(encoded) < 100 and size < 0o77777777777:
            self._out(_ustar_header(encoded, size))
            return
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = FIXED_MTIME
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = "annotator"
        info.type = tarfile.REGTYPE
        self._out(info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict"))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._out(data)
        self._pad(len(data))

    def add_stream(self, name: str, src: BinaryIO, size: int) -> None:
        """Copy exactly ``size`` bytes of ``src`` as one member."""
        self._header(name, size)
        readinto = getattr(src, "readinto", None)
        if readinto is not None and size <= self._capacity:
            # Straight into the buffer: one copy, from the kernel, and no bytes object.
            if size > self._capacity - self._pos:
                self._flush()
            view = self._buffer[self._pos:self._pos + size]
            got = 0
            while got < size:
                n = readinto(view[got:])
                if not n:
                    raise OSError(f"{name}: the source ended {size - got} bytes early")
                got += n
            self._pos += size
            self.size += size
        else:
            left = size
            while left:
                chunk = src.read(min(COPY_CHUNK, left))
                if not chunk:
                    raise OSError(f"{name}: the source ended {left} bytes early")
                self._out(chunk)
                left -= len(chunk)
        self._pad(size)

    def add_file(self, name: str, path: str, size: int) -> None:
        """Copy exactly ``size`` bytes of the local file at ``path`` as one member: what
        ``add_stream`` does with ``open(path, "rb")``, in three system calls (open, read,
        close) and no Python file object."""
        if size > self._capacity:
            with open(path, "rb") as src:
                self.add_stream(name, src, size)
            return
        self._header(name, size)
        if size > self._capacity - self._pos:
            self._flush()
        _read_file(self._buffer[self._pos:self._pos + size], path, name)
        self._pos += size
        self.size += size
        self._pad(size)

    def add_file_and_bytes(self, file_name: str, path: str, size: int, name: str, data: bytes) -> None:
        """``add_file(file_name, path, size)`` then ``add_bytes(name, data)`` (a sample: its image
        and its JSON), written in place in the buffer in one step when both fit in it."""
        file_key, key = file_name.encode("utf-8"), name.encode("utf-8")
        n = len(data)
        file_end = BLOCK + size + -size % BLOCK
        total = file_end + BLOCK + n + -n % BLOCK
        if len(file_key) >= 100 or len(key) >= 100 or total > self._capacity:
            self.add_file(file_name, path, size)
            self.add_bytes(name, data)
            return
        if total > self._capacity - self._pos:
            self._flush()
        buf, at = self._buffer, self._pos
        _read_file(buf[at + BLOCK:at + BLOCK + size], path, file_name)
        buf[at:at + BLOCK] = _ustar_header(file_key, size)
        buf[at + BLOCK + size:at + file_end] = _ZEROS[:file_end - BLOCK - size]
        at += file_end
        buf[at:at + BLOCK] = _ustar_header(key, n)
        buf[at + BLOCK:at + BLOCK + n] = data
        buf[at + BLOCK + n:self._pos + total] = _ZEROS[:total - file_end - BLOCK - n]
        self._pos += total
        self.size += total

    def _pad(self, size: int) -> None:
        rest = size % BLOCK
        if rest:
            self._out(_ZEROS[:BLOCK - rest])

    def close(self, *, wait: bool = True) -> Future | None:
        """Write the end-of-archive blocks and wait until every byte is in the file and hashed.

        With ``wait=False`` (only with a ``scratch``), hand them to the writer thread and return
        at once: ``sha256`` and ``size`` are final, and ``f`` may be closed, once the returned
        future is done (its ``result()`` raises a failed write). A next writer on the same
        scratch may start meanwhile; its writes follow these.
        """
        if not wait and self._scratch is None:
            raise ValueError("close(wait=False) needs a TarScratch to hand the pending write on")
        self._out(_ZEROS)
        last = None
        try:
            self._flush()
            if wait:
                self._wait()
            else:
                last = self._pending
        finally:
            if self._scratch is not None:  # the next writer takes the buffers as they are now
                self._scratch.buffers = (self._buffer, self._spare)
                self._scratch.pending = self._pending
            elif self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        return last

    @staticmethod
    def estimate(member_sizes: list[int]) -> int:
        return sum(BLOCK + ((s + BLOCK - 1) // BLOCK) * BLOCK for s in member_sizes)


class TarScratch:
    """The two buffers and the writer thread of a :class:`TarWriter`, kept for the next one.

    Tar writers of one build, one after another (a split's shards), share them: allocating
    2 MB and starting a thread for every shard cost about 4 ms a shard, a tenth of a small
    export. A writer leaves nothing in them that the next one reads: every byte it hands on
    it wrote itself. Not for two writers at once.
    """

    def __init__(self, flush_bytes: int = FLUSH_BYTES) -> None:
        self.buffers = (memoryview(bytearray(flush_bytes)), memoryview(bytearray(flush_bytes)))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tarwriter")
        self.pending: Future | None = None  # the last writer's last hand-off, if it did not wait

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> "TarScratch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
