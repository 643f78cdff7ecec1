"""File downloads that resume: ``Range`` and ``If-Range`` (206), ``ETag`` = the file's sha256.

Bytes are streamed from the storage in chunks (a local file, or S3 ``GetObject`` with the same
range), never read whole into memory.
"""
from __future__ import annotations

import re
from typing import Iterator

from django.http import HttpResponse, StreamingHttpResponse

from datasets.exports.streams import open_stream

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``(start, end)`` inclusive for a single satisfiable range; None to send the whole file
    (no header, several ranges, or syntax we ignore as RFC 9110 allows); "unsatisfiable"."""
    m = _RANGE.match(header.strip().replace(" ", ""))
    if not m:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


def _storage_chunks(name: str, start: int, length: int) -> Iterator[bytes]:
    if length <= 0:
        return
    with open_stream(name, start, length) as f:
        left = length
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                return
            left -= len(block)
            yield block


def file_response(request, *, name: str, size: int, sha256: str, filename: str,
                  content_type: str = "application/octet-stream") -> HttpResponse:
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0",
               "Content-Disposition": f'attachment; filename="{filename}"'}
    inm = request.headers.get("If-None-Match")
    if inm and etag in [t.strip() for t in inm.split(",")]:
        return HttpResponse(status=304, headers=headers)
    wanted = parse_range(request.headers.get("Range", ""), size) if request.headers.get("Range") else None
    if_range = request.headers.get("If-Range")
    if wanted is not None and if_range and if_range.strip() != etag:
        wanted = None  # the file changed since the client's partial copy: send all of it
    if wanted == "unsatisfiable":
        return HttpResponse(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is None:
        start, length, status = 0, size, 200
    else:
        start, end = wanted
        length, status = end - start + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        response = HttpResponse(status=status, content_type=content_type, headers=headers)
    else:
        response = StreamingHttpResponse(_storage_chunks(name, start, length), status=status,
                                         content_type=content_type, headers=headers)
    response["Content-Length"] = str(length)
    return response
