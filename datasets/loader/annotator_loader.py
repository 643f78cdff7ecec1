"""Annotator's PyTorch loader: one self-contained module, shipped beside every export's manifest.

Needs only the standard library, torch and Pillow. torchvision is never required; when it is
installed, :func:`to_tv_tensors` hands a sample to ``torchvision.transforms.v2``. When msgspec is
installed, the samples' JSON and COCO files are parsed with it (the same values, faster). When
simplejpeg is installed, JPEGs are decoded with it straight into the output tensor (the same
pixels as Pillow's, faster).

Two datasets read an export:

* :class:`ShardDataset` (iterable) reads the WebDataset-compatible tar shards. It splits shards
  by distributed rank and DataLoader worker, shuffles shards by ``seed + epoch``
  (:meth:`ShardDataset.set_epoch`) and samples in a bounded buffer, resumes mid-epoch from
  :meth:`ShardDataset.state_dict`, and checks shards against the manifest's sha256 on request.
* :class:`CocoDataset` (map-style) reads a COCO JSON file and a folder of images, in
  torchvision's style: ``_load_image``, ``_load_target``, one ``transforms`` argument that sees
  the image and its target together.

Both give ``(image, target)``: ``image`` a ``uint8`` tensor ``C x H x W`` (or a PIL image with
``decode="pil"``) and ``target`` a dict ``{"image_id", "size": [h, w], "labels", "instances",
"points"}``. An instance is ``{"id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd",
"segmentation", "points"}``: ``segmentation`` is a list of flat polygons ``[x1, y1, x2, y2,
...]`` or, for crowd regions, COCO's run-length encoding ``{"size": [h, w], "counts": [...]}``.
The transforms here (:class:`RandomCrop`, :class:`Resize`, :class:`RandomHorizontalFlip`,
:class:`ToTensor`, :class:`Compose`) move the image, boxes, polygons, points and masks together.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import json
import json.scanner
import math
import mmap
import os
import random
import sys
import warnings
from pathlib import Path
from multiprocessing import util as _mp_util
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, IterableDataset, get_worker_info

__all__ = [
    "LOADER_VERSION",
    "ShardDataset",
    "CocoDataset",
    "ShardChecksumError",
    "Sample",
    "Compose",
    "RandomCrop",
    "Resize",
    "RandomHorizontalFlip",
    "ToTensor",
    "collate",
    "to_detection_target",
    "to_tv_tensors",
    "rle_to_mask",
    "iter_tar",
    "sha256_file",
]

LOADER_VERSION = 1

_quiet_frombuffer = True  # torch warns once per process that bytes are read-only; we own them


def _frombuffer(data: bytes) -> torch.Tensor:
    global _quiet_frombuffer
    if _quiet_frombuffer:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            tensor = torch.frombuffer(data, dtype=torch.uint8)
        _quiet_frombuffer = False
        return tensor
    return torch.frombuffer(data, dtype=torch.uint8)


_malloc_tuned_pid = 0


def _tune_malloc() -> None:
    """Keep freed image memory in the process (glibc only, once per process).

    A batch holds dozens of decoded images; when it is freed, glibc hands the memory back to the
    kernel, and the next batch pays a page fault for every 4 KiB again, which costs more than half
    a JPEG decode. Raising glibc's trim and mmap thresholds keeps up to 128 MiB of freed memory
    for reuse. A DataLoader worker first gives back the free memory it inherited from its
    parent: writing to it would copy every page (copy-on-write), dearer than a fresh page.
    Turn it off with ``ANNOTATOR_LOADER_TUNE_MALLOC=0``.
    """
    global _malloc_tuned_pid
    pid = os.getpid()
    if _malloc_tuned_pid == pid:
        return
    forked = _malloc_tuned_pid != 0 or get_worker_info() is not None
    _malloc_tuned_pid = pid
    if os.environ.get("ANNOTATOR_LOADER_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        if forked:
            libc.malloc_trim(0)
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class ShardChecksumError(RuntimeError):
    """A shard's bytes do not match the sha256 its manifest records."""


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _tar_number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256, for members over 8 GiB
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    field = field.rstrip(b"\0 ").strip()
    return int(field, 8) if field else 0


def iter_tar(stream) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` of every regular file in a tar stream, in order.

    A small reader of ustar/GNU/pax tar: much cheaper per member than ``tarfile``, which matters
    when members are small images.
    """
    read = stream.read
    long_name: str | None = None
    while True:
        header = read(512)
        if len(header) < 512 or header == b"\0" * 512:
            return
        size = _tar_number(header[124:136])
        kind = header[156:157]
        padded = (size + 511) & ~511
        if kind in (b"0", b"\0", b"7"):
            if long_name is not None:
                name, long_name = long_name, None
            else:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8")
                if header[257:262] == b"ustar":
                    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
                    if prefix:
                        name = f"{prefix}/{name}"
            data = read(padded)
            if len(data) < size:
                raise EOFError(f"tar member {name!r} is truncated")
            yield name, data[:size] if padded != size else data
        elif kind == b"L":  # GNU long name
            long_name = read(padded)[:size].split(b"\0", 1)[0].decode("utf-8")
        elif kind == b"x":  # pax header: only 'path' matters here
            body = read(padded)[:size].decode("utf-8")
            for line in body.splitlines():
                _, _, record = line.partition(" ")
                key, _, value = record.partition("=")
                if key == "path":
                    long_name = value
        else:  # directories, links, global pax headers: skip their bodies
            if padded:
                read(padded)


def _split_name(name: str) -> tuple[str, str]:
    slash = name.rfind("/")
    base = name[slash + 1:]
    dot = base.find(".")
    if dot < 0:
        return name, ""
    return name[: slash + 1 + dot], base[dot + 1:]


def iter_samples(stream) -> Iterator[dict[str, Any]]:
    """Group consecutive tar members by key, as WebDataset does: ``{"__key__", ext: bytes}``."""
    return _group_samples(iter_tar(stream))


def _group_samples(members: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    sample: dict[str, Any] | None = None
    for name, data in members:
        key, ext = _split_name(name)
        if sample is None or sample["__key__"] != key:
            if sample is not None:
                yield sample
            sample = {"__key__": key}
        sample[ext] = data
    if sample is not None:
        yield sample


_RELEASE_BYTES = 32 << 20  # mapped pages given back behind the reader, every this many bytes


def _iter_tar_mapped(mapping: mmap.mmap) -> Iterator[tuple[str, memoryview]]:
    """:func:`iter_tar` over a mapped shard: members are ``memoryview`` slices of the mapping,
    read without a copy or a system call.

    The pages already passed are handed back every ``_RELEASE_BYTES`` (``MADV_DONTNEED``: a
    read-only file mapping re-reads them from the page cache if a slice still in the shuffle
    buffer touches them again), so the reader's resident memory stays small however large
    the shard is.
    """
    view = memoryview(mapping)
    end = len(mapping)
    pos = released = 0
    long_name: str | None = None
    dontneed = getattr(mmap, "MADV_DONTNEED", None)
    while pos + 512 <= end:
        header = mapping[pos:pos + 512]
        if header == _ZERO_BLOCK:
            return
        size = _tar_number(header[124:136])
        kind = header[156:157]
        start = pos + 512
        pos = start + ((size + 511) & ~511)
        if start + size > end:
            name = long_name or header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            raise EOFError(f"tar member {name!r} is truncated")
        if kind in (b"0", b"\0", b"7"):
            if long_name is not None:
                name, long_name = long_name, None
            else:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8")
                if header[257:262] == b"ustar" and header[345]:
                    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
                    name = f"{prefix}/{name}"
            yield name, view[start:start + size]
        elif kind == b"L":  # GNU long name
            long_name = mapping[start:start + size].split(b"\0", 1)[0].decode("utf-8")
        elif kind == b"x":  # pax header: only 'path' matters here
            for line in mapping[start:start + size].decode("utf-8").splitlines():
                _, _, record = line.partition(" ")
                key, _, value = record.partition("=")
                if key == "path":
                    long_name = value
        if dontneed is not None and pos - released >= _RELEASE_BYTES:
            upto = pos - pos % mmap.PAGESIZE
            try:
                mapping.madvise(dontneed, released, upto - released)
            except (OSError, ValueError):
                dontneed = None
            released = upto


_ZERO_BLOCK = bytes(512)


def _shard_samples(path: str) -> Iterator[dict[str, Any]]:
    """The samples of a shard file, read through a memory map (or as a stream when the file
    cannot be mapped: empty, or not a regular file)."""
    with open(path, "rb") as f:
        try:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            yield from iter_samples(f)
            return
    # The mapping lives as long as a member slice does; nothing else refers to the file.
    yield from _group_samples(_iter_tar_mapped(mapping))


_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # the C scanner when there is one

try:  # optional: msgspec parses a sample's target about five times faster than the json module
    import msgspec as _msgspec

    _fast_json: Callable[[Any], Any] | None = _msgspec.json.Decoder().decode
except ImportError:  # pragma: no cover - the loader needs nothing beyond torch and Pillow
    _fast_json = None


def parse_json(data: bytes | memoryview) -> Any:
    """A sample's JSON member (UTF-8): what ``json.loads`` gives.

    With msgspec installed, msgspec parses it first: it gives the same values as ``json.loads``
    (integers of any size stay exact; orjson, which turns integers past 64 bits into floats,
    would not) and refuses what ``json.loads`` alone accepts (``NaN``, ``Infinity``, numbers
    beyond a double's range, lone surrogates, a byte order mark). Whatever it refuses, and
    everything without msgspec, goes to the json module's C scanner, called directly
    (``json.loads`` first sniffs the encoding and then checks the text around the value in
    Python, about a quarter of its time on a sample's target). Anything unusual, such as
    surrounding whitespace or a malformed document, goes through ``json.loads`` itself, which
    gives the same value or the same error."""
    if _fast_json is not None:
        try:
            return _fast_json(data)
        except (ValueError, RecursionError):  # msgspec's DecodeError is a ValueError
            pass
    try:
        text = str(data, "utf-8")
        value, end = _scan_json(text, 0)
    except (StopIteration, UnicodeDecodeError, ValueError):
        return json.loads(bytes(data))
    if end != len(text):
        return json.loads(text)
    return value


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))), ("dictionary", ctypes.POINTER(_ArrowArray)),
    ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p),
]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_BUCKET = 1 << 18  # ctypes caches one array type per length: round lengths up to few buckets


def _bytes_at(address: int, n: int) -> ctypes.Array:
    """A ctypes byte array over ``n`` (rounded up to ``_BUCKET``) bytes of memory at ``address``;
    whoever owns that memory must outlive it, and only the first ``n`` bytes may be touched."""
    return (ctypes.c_uint8 * (-(-n // _BUCKET) * _BUCKET)).from_address(address)


def _pixels_zero_copy(img: Image.Image) -> torch.Tensor | None:
    """The decoded pixels as a flat uint8 RGBX tensor over Pillow's own memory, without a copy.

    Pillow (>= 11.2) exports an image through the Arrow C data interface; its RGB pixels are
    stored as RGBX. The tensor's buffer object holds the Arrow capsules, which hold Pillow's
    memory, so the pixels live as long as any view of them. None when Pillow cannot export
    (older Pillow, or an image spread over several memory blocks).
    """
    core = img.im
    if hasattr(core, "__arrow_c_array__"):
        return _core_pixels(core, img.size)
    try:
        capsule = img.__arrow_c_array__()[1]
    except (AttributeError, ValueError, TypeError, OSError):
        return None
    return _capsule_pixels(capsule, img.size)


def _core_pixels(core: Any, size: tuple[int, int]) -> torch.Tensor | None:
    """:func:`_pixels_zero_copy` for a Pillow image core (``Image.im``)."""
    try:
        capsule = core.__arrow_c_array__()  # the array alone; its schema is known: RGBX bytes
    except (AttributeError, ValueError, TypeError, OSError):
        return None
    return _capsule_pixels(capsule, size)


def _capsule_pixels(capsule: Any, size: tuple[int, int]) -> torch.Tensor | None:
    array = _ArrowArray.from_address(_capsule_pointer(capsule, b"arrow_array"))
    w, h = size
    if array.length != w * h or array.offset != 0 or array.n_children != 1:
        return None
    child = array.children[0].contents
    n = child.length
    if n != w * h * 4 or child.n_buffers < 2 or not child.buffers[1]:
        return None
    buffer = _bytes_at(child.buffers[1], n)
    buffer._keep = capsule  # keeps Pillow's memory alive while the tensor lives
    return torch.frombuffer(buffer, dtype=torch.uint8, count=n)


def _jpeg_to_tensor(data: bytes | memoryview, size: tuple[int, int]) -> torch.Tensor | None:
    """An upright JPEG of known ``size`` (width, height) decoded by libjpeg straight into a new
    tensor, returned as a ``uint8`` C x H x W view of its RGBX rows (Pillow's layout for RGB).

    The tensor comes from ``torch.empty``: the decoder writes every byte of it, so it is not
    zeroed first, as Pillow zeroes a new image (measured side by side, zeroing first made the
    decode 3.5 to 4.3% slower). None when the frame header gives another size or the decoder
    refuses (a CMYK or truncated JPEG, say); the caller takes the longer way.
    """
    if _jpeg_size(data) != size:
        return None
    w, h = size
    pixels = torch.empty(4 * w * h, dtype=torch.uint8)
    if not _decode_jpeg_into(data, _writable(pixels), offset=0, size=size):
        return None
    return pixels.as_strided((3, h, w), (1, 4 * w, 4))


def _writable(tensor: torch.Tensor) -> memoryview:
    """A writable buffer over a contiguous CPU tensor's bytes (tensors have no buffer protocol);
    the tensor must outlive it."""
    n = tensor.numel() * tensor.element_size()
    return memoryview(_bytes_at(tensor.data_ptr(), n))[:n]


_pil_core = Image.core


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a ``uint8`` tensor C x H x W: a view of the decoded pixels."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    rgbx = _pixels_zero_copy(img)
    w, h = img.size
    if rgbx is not None:
        return rgbx.as_strided((3, h, w), (1, 4 * w, 4))
    return _frombuffer(img.tobytes()).view(h, w, 3).permute(2, 0, 1)


_TRANSPOSE = {  # EXIF orientation -> the transpose that turns the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, hopping from segment to segment."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode_jpeg_sized(data: bytes, width: int, height: int, orientation: int) -> Image.Image | None:
    """Decode a JPEG whose upright size the manifest gives, straight through libjpeg.

    ``Image.open`` first walks the JPEG's markers in Python to learn its size and mode; knowing
    the size already (and checking it against the frame header), we hand the bytes to the decoder at once (``Image.frombytes`` with the
    ``jpeg`` decoder, into a new image). Same pixels, less work. None when the decoder refuses (a CMYK JPEG, a
    size that does not match), and the caller falls back to ``Image.open``.
    """
    size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    if _jpeg_size(data) != size:
        return None
    img = Image.new("RGB", size, None)  # zeroed by Pillow; the decoder writes every pixel
    try:
        img.frombytes(data, "jpeg", "RGB", "")
    except (ValueError, OSError):
        return None
    transpose = _TRANSPOSE.get(orientation)
    return img.transpose(transpose) if transpose is not None else img


def _image_member(sample: dict[str, Any]) -> tuple[bytes, str]:
    """A sample's image bytes and their extension (the first of ``_IMAGE_EXTS`` present)."""
    for ext in _IMAGE_EXTS:
        data = sample.get(ext)
        if data is not None:
            return data, ext
    raise KeyError(f"sample {sample['__key__']} has no image member")


try:  # optional: simplejpeg (libjpeg-turbo's TurboJPEG API) writes a JPEG's rows straight into
    # the output, where Pillow's decoder writes each row to a buffer of its own and copies it
    import simplejpeg as _turbo
except ImportError:  # pragma: no cover - the loader needs nothing beyond torch and Pillow
    _turbo = None

# What libjpeg-turbo turns into Pillow's pixels. It also converts CMYK and YCCK JPEGs to RGB, but
# by another formula than Pillow's: those go to Pillow.
_TURBO_COLORSPACES = frozenset({"YCbCr", "RGB", "Gray"})


def _turbo_decode_into(data: bytes | memoryview, region: memoryview, size: tuple[int, int]) -> bool:
    """Decode a JPEG with simplejpeg into ``region`` as RGBX rows; False when simplejpeg is
    absent or refuses. Its default decode (accurate DCT, smooth chroma upsampling) is libjpeg's
    default, which Pillow uses too: the same pixels. It runs strict, so a warning that Pillow would
    let pass (a truncated file, corrupt data) refuses, and Pillow's decoder gives Pillow's answer."""
    if _turbo is None:
        return False
    try:
        height, width, colorspace, _ = _turbo.decode_jpeg_header(data)
        if (width, height) != size or colorspace not in _TURBO_COLORSPACES:
            return False
        _turbo.decode_jpeg(data, "RGBX", buffer=region)  # the array it returns is a view of region
    except ValueError:
        return False
    return True


def _decode_jpeg_into(data: bytes | memoryview, buffer: Any, *, offset: int, size: tuple[int, int]) -> bool:
    """Decode a JPEG of known ``size`` (width, height) straight into ``buffer`` at ``offset``, as
    RGBX rows (Pillow's own layout for RGB): libjpeg writes the pixels where they will travel
    from, through simplejpeg when it is installed, else through Pillow's decoder. False when the
    decoders refuse (a CMYK JPEG, say); the caller decodes another way."""
    w, h = size
    region = memoryview(buffer)[offset: offset + 4 * w * h]
    image = decoder = None
    try:
        if _turbo_decode_into(data, region, size):
            return True
        try:  # Pillow's image core mapped over the region, and its JPEG decoder, bare
            image = _pil_core.map_buffer(region, size, "raw", 0, ("RGBX", 0, 1))
            decoder = _pil_core.jpeg_decoder("RGBX", "RGB", "")
        except (AttributeError, TypeError):  # a Pillow without them: the public way
            image = Image.frombuffer("RGBX", size, region, "raw", "RGBX", 0, 1)
            image.frombytes(data, "jpeg", "RGB", "")
            return True
        decoder.setimage(image, (0, 0, w, h))
        consumed, error = decoder.decode(data)
        return consumed < 0 and error == 0
    except (ValueError, OSError):
        return False
    finally:
        image = decoder = None  # both hold the region; it must be free to be released
        region.release()


def decode_image(data: bytes, mode: str = "tensor", orientation: int = 1, *, ext: str = "",
                 size: tuple[int, int] | None = None):
    """Decode bytes to RGB: a uint8 C x H x W tensor, or a PIL image with ``mode="pil"``.

    ``orientation`` is the EXIF tag the export recorded (geometry is in the upright image, so a
    rotated original is turned upright). With ``ext`` "jpg" and the upright ``size`` (width,
    height) known, JPEGs take the direct decoder path.
    """
    img = None
    if size is not None and ext in ("jpg", "jpeg"):
        if mode == "tensor" and orientation == 1:
            tensor = _jpeg_to_tensor(data, size)
            if tensor is not None:
                return tensor
        img = _decode_jpeg_sized(data, size[0], size[1], orientation)
    if img is None:
        img = Image.open(io.BytesIO(data))
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        else:
            img.load()
    if mode == "pil":
        return img
    return _pil_to_tensor(img)


def _image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or a C x H x W tensor."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return image.size


class PackedImages(list):
    """A list of image tensors that crosses process boundaries as ONE shared buffer.

    A DataLoader worker pickles each tensor it returns into its own shared-memory segment, which
    costs more than decoding a small image. A batch of these is sent as one flat tensor plus
    shapes and comes back as a list of views.
    """

    def __reduce__(self):
        tensors = [t for t in self if isinstance(t, torch.Tensor)]
        if not self or len(tensors) != len(self) or len({t.dtype for t in tensors}) != 1:
            return (PackedImages, (list(self),))
        layout = []
        offset = 0
        flat = _shared_empty(sum(_packed_numel(t) for t in tensors), tensors[0].dtype)
        for t in tensors:
            src, kind = _packing_view(t)
            n = src.numel()
            flat[offset: offset + n].view(src.shape).copy_(src)
            layout.append((tuple(src.shape), kind))
            offset += n
        return (_unpack_images, (flat, layout))


def _shared_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor allocated in shared memory, as ``default_collate`` does in a worker,
    so that sending it to the training process copies nothing more."""
    empty = torch.empty(0, dtype=dtype)
    if get_worker_info() is None:
        return empty.new_empty(numel)
    try:
        storage = empty._typed_storage()._new_shared(numel, device=empty.device)
        return empty.new(storage).resize_(numel)
    except (AttributeError, RuntimeError, TypeError):
        return empty.new_empty(numel)


def _packing_view(t: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The memory-order view of an image tensor to copy: its RGBX or HWC buffer when it is a
    C x H x W view of one (a plain copy), else the tensor itself."""
    if t.dim() == 3 and t.shape[0] == 3:
        h, w = t.shape[1], t.shape[2]
        if t.stride() == (1, 4 * w, 4):
            return t.as_strided((h, w, 4), (4 * w, 4, 1)), "rgbx"
        if t.stride() == (1, 3 * w, 3):
            return t.permute(1, 2, 0), "hwc"
    return t, "plain"


def _packed_numel(t: torch.Tensor) -> int:
    return _packing_view(t)[0].numel()


def _unpack_images(flat: torch.Tensor, layout: list) -> PackedImages:
    out = PackedImages()
    offset = 0
    base = flat.storage_offset()
    for shape, kind in layout:
        n = math.prod(shape)
        if kind == "rgbx":  # C x H x W over RGBX rows, in one step (a batch has dozens of images)
            h, w = shape[0], shape[1]
            out.append(flat.as_strided((3, h, w), (1, 4 * w, 4), base + offset))
            offset += n
            continue
        view = flat[offset: offset + n].view(shape)
        if kind == "hwc":
            view = view.permute(2, 0, 1)
        out.append(view)
        offset += n
    return out


# --------------------------------------------------------------------------------------------
# Reused shared memory for batches crossing from DataLoader workers
# --------------------------------------------------------------------------------------------

_SHM_DIR = "/dev/shm"
_SLOT_HEADER = 64  # byte 0: 1 while the training process may still hold the slot's pixels;
# byte 1: 1 once the worker is done with the slot (replaced it, or ended)
_SLOT_ALIGN = 1 << 20
_RING_SLOTS = 8


class _Slot:
    """One shared-memory file of a worker's ring, mapped in the worker."""

    def __init__(self, *, capacity: int) -> None:
        self.capacity = capacity
        self.path = os.path.join(_SHM_DIR, f"annotator-loader-{os.getpid()}-{os.urandom(8).hex()}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, _SLOT_HEADER + capacity)
            self.map = mmap.mmap(fd, _SLOT_HEADER + capacity)
        finally:
            os.close(fd)
        self.pixels = torch.frombuffer(self.map, dtype=torch.uint8)[_SLOT_HEADER:]
        # The training process unlinks the file on first sight; this covers a worker that ends
        # first, and tells the training process to drop its mapping (a worker's exit runs it).
        self._finalizer = _mp_util.Finalize(self, _close_slot, (self.path, self.map), exitpriority=10)

    @property
    def busy(self) -> bool:
        return self.map[0] != 0

    def retire(self) -> None:
        self._finalizer()


def _close_slot(path: str, mapping: mmap.mmap) -> None:
    try:
        mapping[1] = 1
    except (ValueError, TypeError):
        pass
    _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _SharedRing:
    """A DataLoader worker's reusable shared-memory buffers for its batches' pixels.

    A batch's images are written into a free slot and cross to the training process as the
    slot's file name plus a layout: nothing is copied, and the memory, once faulted in, is used
    again and again (a fresh ~20 MB shared segment per batch costs more than decoding it).

    The contract that keeps this safe: a slot is marked busy when its batch is sent, and only
    the training process marks it free, when the last tensor viewing that batch's memory (the
    yielded images, and any view or slice made of them) is garbage-collected. A worker never
    writes into a busy slot; when all ``max_slots`` are busy (the training loop keeps many
    batches alive) it falls back to a fresh shared segment per batch. So holding batches, or
    views of them, for as long as you like is safe; it only costs memory.
    """

    def __init__(self, *, max_slots: int | None = None) -> None:
        self.max_slots = _RING_SLOTS if max_slots is None else max_slots
        self.slots: list[_Slot] = []
        self.retired: list[str] = []

    def acquire(self, *, nbytes: int) -> _Slot | None:
        """A free slot of at least ``nbytes``, marked busy; None when none can be had."""
        free = [s for s in self.slots if not s.busy]
        fitting = [s for s in free if s.capacity >= nbytes]
        if fitting:
            slot = min(fitting, key=lambda s: s.capacity)
        else:
            if free:  # a free slot that is too small: replace it
                free[0].retire()
                self.slots.remove(free[0])
                self.retired.append(free[0].path)
            elif len(self.slots) >= self.max_slots:
                return None
            capacity = -(-(nbytes + nbytes // 4) // _SLOT_ALIGN) * _SLOT_ALIGN
            try:
                slot = _Slot(capacity=capacity)
            except OSError:
                return None
            self.slots.append(slot)
        slot.map[0] = 1
        return slot

    def take_retired(self) -> list[str]:
        """Names of replaced slots, for the training process to drop its mappings of them."""
        retired, self.retired = self.retired, []
        return retired


_ring: _SharedRing | None = None
_ring_pid = 0


def _worker_ring() -> _SharedRing | None:
    """This DataLoader worker's ring (one per process); None outside a worker or without /dev/shm."""
    global _ring, _ring_pid
    if get_worker_info() is None or not os.path.isdir(_SHM_DIR) or os.environ.get("ANNOTATOR_LOADER_RING", "1") == "0":
        return None
    if _ring is None or _ring_pid != os.getpid():
        _ring, _ring_pid = _SharedRing(), os.getpid()
    return _ring


class _SlotLease:
    """Marks a slot free when garbage-collected: it hangs on the memory object under the batch's
    tensors, so it dies with the last view of the batch."""

    __slots__ = ("map",)

    def __init__(self, mapping: mmap.mmap) -> None:
        self.map = mapping

    def __del__(self) -> None:
        try:
            self.map[0] = 0
        except (ValueError, TypeError):  # mapping already closed at interpreter exit
            pass


_opened_slots: dict[str, tuple[mmap.mmap, int]] = {}


def _slot_images(path: str, capacity: int, layout: list, retired: list[str]) -> PackedImages:
    """Rebuild, in the training process, a batch's images from a worker's slot (see _SharedRing)."""
    for old in retired:
        _opened_slots.pop(old, None)  # the mapping goes when the last lease on it goes
    for old in [name for name, (mapping, _) in _opened_slots.items() if mapping[1]]:
        _opened_slots.pop(old)  # its worker is done with it (ended, e.g. at the end of an epoch)
    entry = _opened_slots.get(path)
    if entry is None:
        fd = os.open(path, os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, _SLOT_HEADER + capacity)
        finally:
            os.close(fd)
        _unlink_quietly(path)  # both processes have it mapped: the name is no longer needed
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        entry = _opened_slots[path] = (mapping, address)
    mapping, address = entry
    memory = (ctypes.c_uint8 * capacity).from_address(address + _SLOT_HEADER)
    memory._keep = _SlotLease(mapping)  # the lease keeps the mapping alive, and frees the slot last
    flat = torch.frombuffer(memory, dtype=torch.uint8)
    return _unpack_images(flat, layout)


class _SlotImages(list):
    """A batch's image tensors written into a ring slot; pickles as the slot's name and layout."""

    def __init__(self, images: list[torch.Tensor], slot: _Slot, layout: list, retired: list[str]) -> None:
        super().__init__(images)
        self.slot, self.layout, self.retired = slot, layout, retired

    def __reduce__(self):
        return (_slot_images, (self.slot.path, self.slot.capacity, self.layout, self.retired))


def _fill_slot(slot: _Slot, plan: list) -> tuple[list, list[torch.Tensor]]:
    """Write a batch's pixels into ``slot``: JPEGs decoded in place, tensors copied. ``plan`` has
    one ``(jpeg, tensor, shape)`` per image: the JPEG's bytes (its shape ``(h, w, 4)``, RGBX) or
    None and a ``uint8`` tensor (its shape that of :func:`_packing_view`)."""
    layout: list[tuple[tuple[int, ...], str]] = []
    images: list[torch.Tensor] = []
    pixels = slot.pixels
    base = pixels.storage_offset()
    offset = 0
    for data, image, shape in plan:
        n = math.prod(shape)
        if data is not None and _decode_jpeg_into(data, slot.map, offset=_SLOT_HEADER + offset,
                                                  size=(shape[1], shape[0])):
            # The C x H x W view of the RGBX rows just written, in one step.
            h, w = shape[0], shape[1]
            layout.append((shape, "rgbx"))
            images.append(pixels.as_strided((3, h, w), (1, 4 * w, 4), base + offset))
            offset += n
            continue
        dst = pixels[offset: offset + n].view(shape)
        kind = "plain"
        if data is not None:
            kind = "rgbx"
            dst[:, :, :3].copy_(decode_image(data, "tensor").permute(1, 2, 0))
        else:
            src, kind = _packing_view(image)
            dst.copy_(src)
        layout.append((shape, kind))
        images.append(_unpack_images(dst.reshape(-1), [(shape, kind)])[0])
        offset += n
    return layout, images


def _images_in_slot(ring: _SharedRing, plan: list) -> _SlotImages | None:
    """A batch's images written into a free slot of ``ring`` (see :func:`_fill_slot` for
    ``plan``), to cross as the slot's name and layout; None when no slot can be had."""
    slot = ring.acquire(nbytes=sum(math.prod(shape) for _, _, shape in plan))
    if slot is None:
        return None
    try:
        layout, images = _fill_slot(slot, plan)
    except BaseException:
        slot.map[0] = 0  # nothing was sent: the slot is free again
        raise
    return _SlotImages(images, slot, layout, ring.take_retired())


class Sample:
    """A sample or batch as a read-only mapping: ``s["image"]``, ``s["target"]``, ``s["__key__"]``.

    Deliberately not a ``collections.abc.Mapping``: a DataLoader with ``batch_size=None`` runs
    ``default_convert`` over every item, which walks dicts and lists element by element and would
    spend more time in the targets' coordinates than Pillow spends decoding the image.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self):
        return self._data.keys()

    def items(self):
        return self._data.items()

    def values(self):
        return self._data.values()

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sample) and self._data == other._data

    def __repr__(self) -> str:
        return f"Sample(keys={list(self._data)})"

    def __reduce__(self):
        return (Sample, (self._data,))


# --------------------------------------------------------------------------------------------
# ShardDataset
# --------------------------------------------------------------------------------------------


def _round_robin_skips(position: int, counts: Sequence[int]) -> list[int]:
    """How many items each worker already gave when a DataLoader yielded ``position`` items.

    A DataLoader over an IterableDataset takes items from its workers in turn and passes over a
    worker once it is exhausted; so the global position maps to one count per worker.
    """
    skips = [0] * len(counts)
    active = [i for i, n in enumerate(counts) if n > 0]
    remaining = position
    while remaining > 0 and active:
        smallest = min(counts[i] - skips[i] for i in active)
        full_rounds = min(smallest, remaining // len(active))
        if full_rounds:
            for i in active:
                skips[i] += full_rounds
            remaining -= full_rounds * len(active)
        else:
            for i in active:
                if remaining == 0:
                    break
                skips[i] += 1
                remaining -= 1
        active = [i for i in active if skips[i] < counts[i]]
    return skips


class ShardDataset(IterableDataset):
    """Samples of an export's tar shards, split across ranks and DataLoader workers.

    Args:
        source: the export's folder or its ``manifest.json`` (then ``split`` picks the shards
            and the manifest gives checksums and sample counts), or a list of shard paths.
        split: ``"train"``, ``"val"`` or ``"test"`` when ``source`` is a manifest.
        shuffle: shuffle the shard order by ``seed + epoch`` and samples in a buffer.
        seed: defaults to the manifest's seed (0 without a manifest).
        buffer_size: samples (still encoded) held for shuffling.
        rank, world_size: this process's place among distributed readers; by default taken from
            ``torch.distributed`` when it is initialized, else 0 and 1.
        batch_size: when set, yield batches (use ``DataLoader(ds, batch_size=None)``); images of
            a batch cross from the worker in one shared buffer.
        transforms: ``callable(image, target) -> (image, target)``.
        decode: ``"tensor"`` (uint8 C x H x W), ``"pil"``, or ``"raw"`` (bytes, undecoded).
        verify: check each shard's sha256 against the manifest before reading it.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        split: str = "train",
        *,
        shuffle: bool = True,
        seed: int | None = None,
        buffer_size: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        batch_size: int | None = None,
        drop_last: bool = False,
        transforms: Callable | None = None,
        decode: str = "tensor",
        verify: bool = False,
    ) -> None:
        super().__init__()
        self.manifest: dict[str, Any] | None = None
        self.shards: list[str] = []
        self.shard_samples: list[int | None] = []
        self.shard_sha256: list[str | None] = []
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            manifest_path = path / "manifest.json" if path.is_dir() else path
            self.manifest = json.loads(manifest_path.read_text())
            root = manifest_path.parent
            try:
                entries = self.manifest["splits"][split]["shards"]
            except KeyError:
                raise KeyError(f"the manifest {manifest_path} has no shards for split {split!r}") from None
            for entry in entries:
                self.shards.append(str(root / entry["name"]))
                self.shard_samples.append(int(entry["samples"]))
                self.shard_sha256.append(entry.get("sha256"))
            if seed is None:
                seed = int(self.manifest.get("seed", 0))
        else:
            self.shards = [str(p) for p in source]
            self.shard_samples = [None] * len(self.shards)
            self.shard_sha256 = [None] * len(self.shards)
        if decode not in ("tensor", "pil", "raw"):
            raise ValueError(f"decode must be 'tensor', 'pil' or 'raw', not {decode!r}")
        self.split = split
        self.shuffle = shuffle
        self.seed = int(seed or 0)
        self.buffer_size = max(1, int(buffer_size))
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.transforms = transforms
        self.decode = decode
        self.verify = verify
        self.epoch = 0
        self._skip = 0
        self._position = 0
        self._verified: set[str] = set()

    # -- bookkeeping ---------------------------------------------------------------------

    @property
    def num_samples(self) -> int | None:
        """Samples in all shards of the split (every rank together), when the manifest says."""
        if any(n is None for n in self.shard_samples):
            return None
        return sum(self.shard_samples)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch; call before iterating, on every rank, with the same epoch."""
        self.epoch = int(epoch)
        self._position = 0

    def state_dict(self, position: int | None = None) -> dict[str, int]:
        """Where this epoch stands. ``position`` is the number of items (samples, or batches
        when ``batch_size`` is set) the training loop took from the DataLoader; without workers
        the dataset counts them itself."""
        return {
            "version": LOADER_VERSION,
            "epoch": self.epoch,
            "seed": self.seed,
            "position": self._position if position is None else int(position),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration continues the recorded epoch after ``position`` items.

        Use the same seed, shards, ranks, ``num_workers`` and ``batch_size`` as the saved run.
        """
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this dataset uses {self.seed}")
        self.epoch = int(state["epoch"])
        self._skip = int(state["position"])
        self._position = self._skip

    def verify_shards(self) -> None:
        """Check every shard of the split against the manifest's sha256."""
        for path, expected in zip(self.shards, self.shard_sha256):
            self._verify(path, expected)

    def _verify(self, path: str, expected: str | None) -> None:
        if path in self._verified:
            return
        if expected is None:
            raise ShardChecksumError(f"shard {path}: no sha256 to check against (load it from a manifest)")
        actual = sha256_file(path)
        if actual != expected:
            raise ShardChecksumError(
                f"shard {path} is damaged or was changed: its sha256 is {actual}, "
                f"the manifest records {expected}. Download it again."
            )
        self._verified.add(path)

    # -- splitting -----------------------------------------------------------------------

    def _placement(self) -> tuple[int, int, int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world = dist.get_world_size() if world is None else world
            else:
                rank, world = rank or 0, world or 1
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def _epoch_shards(self) -> list[int]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def _items(self, samples: int) -> int:
        if self.batch_size is None:
            return samples
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def _my_skip(self, order: list[int], rank: int, world: int, worker: int, workers: int) -> int:
        if not self._skip:
            return 0
        if workers == 1:
            return self._skip
        counts = []
        for w in range(workers):
            shard_ids = order[rank::world][w::workers]
            samples = [self.shard_samples[i] for i in shard_ids]
            if any(n is None for n in samples):
                raise ValueError("resuming with several workers needs the manifest's sample counts")
            counts.append(self._items(sum(samples)))  # type: ignore[arg-type]
        return _round_robin_skips(self._skip, counts)[worker]

    # -- iteration -----------------------------------------------------------------------

    def _raw_samples(self, shard_ids: list[int], rng: random.Random) -> Iterator[dict[str, Any]]:
        buffer: list[dict[str, Any]] = []
        size = self.buffer_size if self.shuffle else 0
        for i in shard_ids:
            path = self.shards[i]
            if self.verify:
                self._verify(path, self.shard_sha256[i])
            for sample in _shard_samples(path):
                if size <= 1:
                    yield sample
                elif len(buffer) < size:
                    buffer.append(sample)
                else:
                    j = rng.randrange(size)
                    yield buffer[j]
                    buffer[j] = sample
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, sample: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        data, ext = _image_member(sample)
        meta = sample.get("json")
        target = parse_json(meta) if meta is not None else {}
        if self.decode == "raw":
            image = bytes(data)
        else:
            size = (target["width"], target["height"]) if "width" in target and "height" in target else None
            image = decode_image(data, self.decode, target.get("exif_orientation", 1), ext=ext, size=size)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __iter__(self) -> Iterator[Any]:
        _tune_malloc()
        rank, world, worker, workers = self._placement()
        order = self._epoch_shards()
        mine = order[rank::world][worker::workers]
        skip = self._my_skip(order, rank, world, worker, workers)
        rng = random.Random(hash((self.seed, self.epoch, rank, worker)) & 0xFFFFFFFF)
        raw = self._raw_samples(mine, rng)
        in_worker = get_worker_info() is not None
        if self.batch_size is None:
            for _ in range(skip):
                if next(raw, None) is None:
                    return
            for sample in raw:
                image, target = self._decode(sample)
                self._position += 1
                yield Sample({"__key__": sample["__key__"], "image": image, "target": target})
            return
        for _ in range(skip * self.batch_size):
            if next(raw, None) is None:
                return
        ring = _worker_ring() if self.decode == "tensor" else None
        pending: list[dict[str, Any]] = []
        for sample in raw:
            pending.append(sample)
            if len(pending) == self.batch_size:
                self._position += 1
                yield self._batch(pending, in_worker=in_worker, ring=ring)
                pending = []
        if pending and not self.drop_last:
            self._position += 1
            yield self._batch(pending, in_worker=in_worker, ring=ring)

    def _batch(self, samples: list[dict[str, Any]], *, in_worker: bool, ring: _SharedRing | None) -> Sample:
        """Decode a batch. In a DataLoader worker with a ring, the images go straight into a
        reused shared-memory slot (JPEGs of known size are decoded into it by libjpeg)."""
        keys = [s["__key__"] for s in samples]
        if ring is not None:
            batch = self._slot_batch(samples, ring)
            if batch is not None:
                images, targets = batch
                return Sample({"__key__": keys, "image": images, "target": targets})
        images: list[Any] = PackedImages() if in_worker and self.decode == "tensor" else []
        targets: list[dict[str, Any]] = []
        for sample in samples:
            image, target = self._decode(sample)
            images.append(image)
            targets.append(target)
        return Sample({"__key__": keys, "image": images, "target": targets})

    def _slot_batch(self, samples: list[dict[str, Any]], ring: _SharedRing) -> tuple[list, list] | None:
        """Images and targets of a batch with the pixels in a slot of ``ring``; None when the
        batch does not fit the scheme (not all uint8 tensors) or no slot is free."""
        plan: list[tuple[bytes | None, torch.Tensor | None, tuple[int, ...]]] = []  # (jpeg, tensor, shape)
        targets: list[dict[str, Any]] = []
        for sample in samples:
            data, ext = _image_member(sample)
            meta = sample.get("json")
            target = parse_json(meta) if meta is not None else {}
            w, h = target.get("width"), target.get("height")
            if (self.transforms is None and ext in ("jpg", "jpeg") and target.get("exif_orientation", 1) == 1
                    and w is not None and h is not None and _jpeg_size(data) == (w, h)):
                plan.append((data, None, (h, w, 4)))
            else:
                image = decode_image(data, "tensor", target.get("exif_orientation", 1), ext=ext,
                                     size=(w, h) if w is not None and h is not None else None)
                if self.transforms is not None:
                    image, target = self.transforms(image, target)
                if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
                    return None
                view, _ = _packing_view(image)
                plan.append((None, image, tuple(view.shape)))
            targets.append(target)
        images = _images_in_slot(ring, plan)
        return None if images is None else (images, targets)


# --------------------------------------------------------------------------------------------
# CocoDataset
# --------------------------------------------------------------------------------------------


class CocoDataset(Dataset):
    """A COCO JSON file and its folder of images, as a map-style dataset (torchvision's style).

    ``dataset[i]`` is ``(image, target)``, the target in the same shape as :class:`ShardDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Callable | None = None,
        decode: str = "tensor",
    ) -> None:
        self.root = Path(root)
        self.transforms = transforms
        self.decode = decode
        with open(ann_file, "rb") as f:
            data = parse_json(f.read())  # msgspec, when present, reads a large COCO file in half the time
        self.images = {img["id"]: img for img in data["images"]}
        self.ids = sorted(self.images)
        self.categories = {c["id"]: c for c in data.get("categories", [])}
        self._anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self.ids}
        for ann in data.get("annotations", []):
            self._anns.setdefault(ann["image_id"], []).append(ann)
        self._labels: dict[int, list[int]] = {}
        for label in data.get("image_labels", []):
            self._labels.setdefault(label["image_id"], []).append(label["category_id"])

    def __len__(self) -> int:
        return len(self.ids)

    def _load_image(self, id: int):
        img = self.images[id]
        name = img["file_name"]
        with open(self.root / name, "rb") as f:
            data = f.read()
        return decode_image(data, self.decode, img.get("exif_orientation", 1), ext=name.rsplit(".", 1)[-1].lower(),
                            size=(img["width"], img["height"]))

    def _load_target(self, id: int) -> dict[str, Any]:
        img = self.images[id]
        instances = [
            {
                "id": a["id"],
                "category_id": a["category_id"],
                "bbox": list(a["bbox"]),
                "area": a["area"],
                "iscrowd": a.get("iscrowd", 0),
                "segmentation": a["segmentation"],
                "points": a.get("points", []),
            }
            for a in self._anns.get(id, [])
        ]
        return {
            "image_id": id,
            "size": [img["height"], img["width"]],
            "labels": sorted(self._labels.get(id, [])),
            "instances": instances,
            "points": [],
        }

    def __getitem__(self, index: int):
        _tune_malloc()
        id = self.ids[index]
        image, target = self._load_image(id), self._load_target(id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def rle_counts(rle: dict[str, Any]) -> list[int]:
    """Run lengths of a COCO RLE, uncompressed (a list) or compressed (pycocotools' string)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return [int(c) for c in counts]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def rle_to_mask(rle: dict[str, Any]) -> torch.Tensor:
    """A COCO RLE as a ``uint8`` H x W mask (runs go down columns, as in COCO)."""
    h, w = rle["size"]
    counts = torch.tensor(rle_counts(rle), dtype=torch.long)
    values = torch.arange(len(counts)) % 2
    flat = torch.repeat_interleave(values.to(torch.uint8), counts)
    if flat.numel() != h * w:
        raise ValueError(f"RLE covers {flat.numel()} pixels, expected {h}x{w}")
    return flat.view(w, h).t().contiguous()


def _poly_area(flat: Sequence[float]) -> float:
    n = len(flat) // 2
    s = 0.0
    for i in range(n):
        x1, y1 = flat[2 * i], flat[2 * i + 1]
        x2, y2 = flat[(2 * i + 2) % (2 * n)], flat[(2 * i + 3) % (2 * n)]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2


def _clip_polygon(flat: Sequence[float], w: float, h: float) -> list[float]:
    """Sutherland-Hodgman: a polygon cut to the rectangle [0, w] x [0, h]."""
    pts = list(zip(flat[0::2], flat[1::2]))
    for axis, bound, keep_below in ((0, 0.0, False), (0, w, True), (1, 0.0, False), (1, h, True)):
        if not pts:
            break
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = cur[axis] <= bound if keep_below else cur[axis] >= bound
            prev_in = prev[axis] <= bound if keep_below else prev[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = (prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1]))
                out.append(cross)
            if cur_in:
                out.append(cur)
        pts = out
    return [c for p in pts for c in p] if len(pts) >= 3 else []


def _bounds(flats: Iterable[Sequence[float]]) -> list[float] | None:
    xs = [v for f in flats for v in f[0::2]]
    ys = [v for f in flats for v in f[1::2]]
    if not xs:
        return None
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _mask_bbox(mask: torch.Tensor) -> list[float] | None:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return None
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _instance_mask(inst: dict[str, Any]) -> torch.Tensor | None:
    if "mask" in inst:
        return inst["mask"]
    seg = inst.get("segmentation")
    if isinstance(seg, dict):
        inst["mask"] = rle_to_mask(seg)
        inst.pop("segmentation")
        return inst["mask"]
    return None


def _map_target(target: dict[str, Any], fx: Callable[[float], float], fy: Callable[[float], float],
                mask_op: Callable[[torch.Tensor], torch.Tensor], new_w: float, new_h: float,
                flip_x: bool = False, clip: bool = False) -> dict[str, Any]:
    """Apply a per-axis coordinate map to every box, polygon, point and mask of a target."""
    out = dict(target)
    out["size"] = [int(new_h), int(new_w)]

    def point_ok(x: float, y: float) -> bool:
        return not clip or (0 <= x <= new_w and 0 <= y <= new_h)

    instances = []
    for inst in target.get("instances", []):
        inst = dict(inst)
        inst["points"] = [[fx(x), fy(y)] for x, y in inst.get("points", []) if point_ok(fx(x), fy(y))]
        mask = _instance_mask(inst)
        if mask is not None:
            mask = mask_op(mask)
            inst["mask"] = mask
            box = _mask_bbox(mask)
            if box is None:
                continue
            inst["bbox"], inst["area"] = box, float(mask.sum())
        else:
            polys = []
            for flat in inst.get("segmentation") or []:
                moved = [fx(v) if i % 2 == 0 else fy(v) for i, v in enumerate(flat)]
                if flip_x:  # keep the winding order after a mirror
                    pairs = list(zip(moved[0::2], moved[1::2]))[::-1]
                    moved = [c for p in pairs for c in p]
                if clip:
                    moved = _clip_polygon(moved, new_w, new_h)
                if len(moved) >= 6 and _poly_area(moved) > 0:
                    polys.append(moved)
            if inst.get("segmentation"):
                if not polys:
                    continue
                inst["segmentation"] = polys
                inst["bbox"] = _bounds(polys)
                inst["area"] = sum(_poly_area(p) for p in polys)
            else:  # a box without an outline
                x, y, bw, bh = inst["bbox"]
                xs = sorted((fx(x), fx(x + bw)))
                ys = sorted((fy(y), fy(y + bh)))
                if clip:
                    xs = [min(max(v, 0.0), new_w) for v in xs]
                    ys = [min(max(v, 0.0), new_h) for v in ys]
                inst["bbox"] = [xs[0], ys[0], xs[1] - xs[0], ys[1] - ys[0]]
                inst["area"] = inst["bbox"][2] * inst["bbox"][3]
        if inst["bbox"][2] <= 0 or inst["bbox"][3] <= 0:
            continue
        instances.append(inst)
    out["instances"] = instances
    out["points"] = [
        {**p, "x": fx(p["x"]), "y": fy(p["y"])}
        for p in target.get("points", [])
        if point_ok(fx(p["x"]), fy(p["y"]))
    ]
    return out


# --------------------------------------------------------------------------------------------
# Transforms (image and target together)
# --------------------------------------------------------------------------------------------


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomCrop:
    """Crop a random window; boxes, polygons, points and masks shift with it (as the lecture's
    landmarks do) and are cut to the window. Instances left outside it are dropped.

    ``size`` is an int (square) or ``(height, width)``; a window larger than the image is
    shrunk to the image.
    """

    def __init__(self, size: int | tuple[int, int], generator: random.Random | None = None) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.rng = generator or random

    def __call__(self, image, target):
        w, h = _image_size(image)
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        top = self.rng.randint(0, h - ch)
        left = self.rng.randint(0, w - cw)
        if isinstance(image, torch.Tensor):
            image = image[..., top: top + ch, left: left + cw]
        else:
            image = image.crop((left, top, left + cw, top + ch))
        target = _map_target(
            target, lambda x: x - left, lambda y: y - top,
            lambda m: m[top: top + ch, left: left + cw], cw, ch, clip=True,
        )
        return image, target


class Resize:
    """Resize to ``(height, width)``, or the shorter side to ``size`` keeping the aspect."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image, target):
        w, h = _image_size(image)
        if isinstance(self.size, int):
            scale = self.size / min(w, h)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        else:
            nh, nw = self.size
        if isinstance(image, torch.Tensor):
            image = torch.nn.functional.interpolate(
                image.unsqueeze(0).float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
            ).squeeze(0).round_().clamp_(0, 255).to(image.dtype)
        else:
            image = image.resize((nw, nh), Image.BILINEAR)
        sx, sy = nw / w, nh / h

        def mask_op(m: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(m[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].to(torch.uint8)

        target = _map_target(target, lambda x: x * sx, lambda y: y * sy, mask_op, nw, nh)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: random.Random | None = None) -> None:
        self.p = p
        self.rng = generator or random

    def __call__(self, image, target):
        if self.rng.random() >= self.p:
            return image, target
        w, h = _image_size(image)
        if isinstance(image, torch.Tensor):
            image = image.flip(-1)
        else:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        target = _map_target(target, lambda x: w - x, lambda y: y, lambda m: m.flip(-1), w, h, flip_x=True)
        return image, target


class ToTensor:
    """A PIL image or uint8 tensor as a float tensor C x H x W in [0, 1]; the target unchanged."""

    def __call__(self, image, target):
        if not isinstance(image, torch.Tensor):
            image = _pil_to_tensor(image)
        if image.dtype == torch.uint8:
            image = image.float().div_(255)
        return image, target


# --------------------------------------------------------------------------------------------
# Batching and bridges
# --------------------------------------------------------------------------------------------


def collate(batch: list[Any]) -> Any:
    """Collate samples with different instance counts: images stacked when they share a shape,
    else kept as a list; targets always a list.

    Accepts ShardDataset samples (dicts) and CocoDataset ``(image, target)`` pairs.
    """
    if not batch:
        return batch
    if isinstance(batch[0], (dict, Sample)):
        images = [b["image"] for b in batch]
        return Sample({"__key__": [b["__key__"] for b in batch], "image": _stack(images),
                       "target": [b["target"] for b in batch]})
    images, targets = zip(*batch)
    return _stack(list(images)), list(targets)


def _stack(images: list[Any]):
    """Images of one shape as one stacked tensor, else a list.

    In a DataLoader worker the pixels cross to the training process in one piece rather than one
    shared segment an image: a stacked tensor is made in shared memory, and a list of ``uint8``
    images is copied into a slot of the worker's ring of reused shared buffers (as
    :class:`ShardDataset`'s batches are), or, when no slot is free, into one fresh shared piece
    (:class:`PackedImages`)."""
    if not images or not all(isinstance(i, torch.Tensor) for i in images):
        return images
    in_worker = get_worker_info() is not None
    if len({(tuple(i.shape), i.dtype) for i in images}) == 1:
        if not in_worker:
            return torch.stack(images)
        out = _shared_empty(len(images) * images[0].numel(), images[0].dtype)
        return torch.stack(images, out=out.view(len(images), *images[0].shape))
    if not in_worker:
        return images
    ring = _worker_ring()
    if ring is not None and all(i.dtype == torch.uint8 for i in images):
        in_slot = _images_in_slot(ring, [(None, i, tuple(_packing_view(i)[0].shape)) for i in images])
        if in_slot is not None:
            return in_slot
    return PackedImages(images)


def to_detection_target(target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Boxes as ``x1, y1, x2, y2`` float tensors and labels as int64, as detection models take."""
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (i["bbox"] for i in target["instances"])],
                         dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([i["category_id"] for i in target["instances"]], dtype=torch.int64)
    return {"boxes": boxes, "labels": labels, "image_id": torch.tensor(target.get("image_id", -1))}


def to_tv_tensors(image, target):
    """Wrap a sample in torchvision's ``tv_tensors`` so ``torchvision.transforms.v2`` can take it.

    Returns ``(tv_tensors.Image, {"boxes": BoundingBoxes(XYWH), "labels", "image_id"})``.
    torchvision is optional; without it this raises ImportError saying so.
    """
    try:
        from torchvision import tv_tensors
    except ImportError as exc:
        raise ImportError(
            "to_tv_tensors needs torchvision (>= 0.16, for transforms.v2), which is not installed; "
            "the rest of annotator_loader works without it."
        ) from exc
    if not isinstance(image, torch.Tensor):
        image = _pil_to_tensor(image)
    h, w = int(image.shape[-2]), int(image.shape[-1])
    boxes = torch.tensor([i["bbox"] for i in target["instances"]], dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.Image(image), {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYWH", canvas_size=(h, w)),
        "labels": torch.tensor([i["category_id"] for i in target["instances"]], dtype=torch.int64),
        "image_id": target.get("image_id"),
    }

