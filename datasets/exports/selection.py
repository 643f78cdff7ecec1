"""What an export contains: the images its filters keep, their split, and their annotations.

Everything is read in chunks of image ids so memory stays flat however large the project is.
The split of an image depends only on a hash of its id and the ratios, so an image stays in the
same split from one export version to the next; the seed only orders samples in the shards.
"""
from __future__ import annotations

import copy
import hashlib
import json
import json.scanner
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from django.db import connections
from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from pycocotools import mask as mask_utils

from datasets.exports.shards import encode_json
from datasets.models import Category, Image, ImageLabel, InstancePoint, Polygon, Project, Stage

SPLITS = ("train", "val", "test")
COMPLETE_STAGES = ("categories", "spotting", "segmentation")
CHUNK = 256

_EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "mpo": "jpg", "png": "png", "webp": "webp"}


class _Splitter:
    """``split_of`` for one set of ratios, as an index into ``SPLITS``: the cumulative bounds
    worked out once, not per image."""

    def __init__(self, ratios: dict[str, float]) -> None:
        self.bounds: list[float] = []
        acc = 0.0
        for name in SPLITS:
            acc += float(ratios.get(name, 0.0))
            self.bounds.append(acc)
        # Past the last bound (ratios summing to a hair under 1): the last split that has a share.
        self.last = next((code for code in reversed(range(len(SPLITS))) if ratios.get(SPLITS[code], 0) > 0), None)

    def __call__(self, image_id: int) -> int:
        digest = hashlib.sha256(b"annotator-split:%d" % image_id).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for code, bound in enumerate(self.bounds):
            if u < bound:
                return code
        if self.last is None:
            raise ValueError("no split has a ratio above 0")
        return self.last


def split_of(image_id: int, ratios: dict[str, float]) -> str:
    """train / val / test from a hash of the image id: stable across versions and seeds."""
    return SPLITS[_Splitter(ratios)(image_id)]


def shuffle_key(image_id: int, seed: int) -> bytes:
    """The once-and-for-all sample order in the shards: a hash of the seed and the image id."""
    return hashlib.sha256(b"%d:%d" % (seed, image_id)).digest()[:12]


def shuffled(ids: Sequence[int], sizes: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` and their ``sizes`` in shard order: by ``shuffle_key``, ties in the order given.

    What ``sorted(zip(ids, sizes), key=lambda s: shuffle_key(s[0], seed))`` gives, held in
    arrays (the 12-byte key as 8 + 4 bytes, and the order: about 20 bytes per image while
    sorting) rather than in a Python object or two per image.
    """
    high, low = array("Q"), array("I")
    for image_id in map(int, ids):
        digest = shuffle_key(image_id, seed)
        high.append(int.from_bytes(digest[:8], "big"))
        low.append(int.from_bytes(digest[8:], "big"))
    # lexsort is stable and sorts by its last key first: by the key's first 8 bytes, then its
    # last 4, then the order given, as sorting by the 12 bytes does.
    order = np.lexsort((np.frombuffer(low, dtype=np.uint32), np.frombuffer(high, dtype=np.uint64)))
    del high, low
    return np.asarray(ids, dtype=np.int64)[order], np.asarray(sizes, dtype=np.int64)[order]


def sample_key(image_id: int) -> str:
    """The WebDataset key of an image: zero-padded, no dots."""
    return f"{image_id:010d}"


class _FileName:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class ImageRow:
    """The columns of an Image an export needs, read without building a model instance."""

    FIELDS = ("id", "file", "width", "height", "exif_orientation", "format", "file_size", "sha256", "license",
              "attribution", "source_url")
    __slots__ = ("pk", "file", "width", "height", "exif_orientation", "format", "file_size", "sha256", "license",
                 "attribution", "source_url")

    def __init__(self, pk, file, width, height, exif_orientation, format, file_size, sha256, license, attribution,
                 source_url) -> None:
        self.pk, self.file, self.width, self.height = pk, _FileName(file), width, height
        self.exif_orientation, self.format, self.file_size, self.sha256 = exif_orientation, format, file_size, sha256
        self.license, self.attribution, self.source_url = license, attribution, source_url


def image_extension(image: Image | ImageRow) -> str:
    name = image.file.name or ""
    dot = name.rfind(".")
    if dot > name.rfind("/"):  # the file name's own extension, if we know it
        known = _EXTENSIONS.get(name[dot + 1:].lower())
        if known:
            return known
    fmt = image.format.lower()
    return _EXTENSIONS.get(fmt, fmt or "bin")


@dataclass
class Selection:
    project: Project
    filters: dict[str, Any]
    ratios: dict[str, float]
    categories: list[Category] = field(default_factory=list)
    _compiled: dict[str, "_ChunkQuery"] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        wanted = self.filters.get("categories") or []
        qs = Category.objects.filter(project=self.project).order_by("coco_id")
        if wanted:
            qs = qs.filter(coco_id__in=wanted)
        self.categories = list(qs)
        self.category_pks = {c.pk: c for c in self.categories}
        self.coco_ids = {pk: c.coco_id for pk, c in self.category_pks.items()}

    @property
    def min_confidence(self) -> float | None:
        value = self.filters.get("min_confidence")
        return None if value is None else float(value)

    # -- images ---------------------------------------------------------------------------

    def images(self) -> QuerySet[Image]:
        qs = Image.objects.filter(project=self.project)
        stages = self.filters.get("complete_stages") or []
        present = ImageLabel.objects.filter(image=OuterRef("pk"), stage=Stage.AGGREGATE, present=True)
        if "categories" in stages:
            qs = qs.filter(Exists(ImageLabel.objects.filter(image=OuterRef("pk"), stage=Stage.AGGREGATE)))
        if "spotting" in stages:
            qs = qs.filter(Exists(InstancePoint.objects.filter(image=OuterRef("pk"), stage=Stage.AGGREGATE)) | ~Exists(present))
        if "segmentation" in stages:
            qs = qs.filter(~Exists(Polygon.objects.filter(image=OuterRef("pk"), status=Polygon.Status.PENDING))).filter(
                Exists(Polygon.objects.filter(image=OuterRef("pk"), status=Polygon.Status.ACCEPTED)) | ~Exists(present)
            )
        return qs.order_by("id")

    def image_index(self) -> tuple[array, array, array]:
        """Every selected image's id, file size and split (its index in ``SPLITS``), in id order,
        in three arrays: 17 bytes an image."""
        ids, sizes, codes = array("q"), array("q"), array("b")
        split = _Splitter(self.ratios)
        for pk, size in self.images().values_list("id", "file_size").iterator(chunk_size=2000):
            ids.append(pk)
            sizes.append(size)
            codes.append(split(pk))
        return ids, sizes, codes

    # -- annotations ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Compile the chunk queries now: before forking shard writers, which then share them."""
        self._queries()

    def _queries(self) -> dict[str, "_ChunkQuery"]:
        """The four queries a chunk of images needs, as SQL: compiled by the ORM once per process
        and confidence filter (``_compiled_queries``), with this export's categories written in."""
        if self._compiled is None:
            listed = ",".join(str(int(pk)) for pk in self.category_pks) or "NULL"
            self._compiled = {name: query.with_categories(listed)
                              for name, query in _compiled_queries(Image.objects.db, self.min_confidence).items()}
        return self._compiled

    def records(self, image_ids: list[int], *, instances_json: bool = False) -> dict[int, dict[str, Any]]:
        """Everything an export writes about these images, keyed by image id.

        Plain rows from queries compiled once (see ``_ChunkQuery``), not model instances:
        building models, or even having the ORM build the same SQL for every chunk, costs
        more than the rest of an export. With ``instances_json`` (the shards), each record has
        ``instances_json``, its instances as the sample JSON's text (``instance_json``), in
        place of ``instances``.
        """
        out = self._rows(image_ids)
        for entry in out.values():
            self._finish(entry, instances_json)
        return out

    def _rows(self, image_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The chunk's rows by image: records whose accepted polygons are still the database's
        rows (``_polygons``), until ``_finish``."""
        queries = self._queries()
        out: dict[int, dict[str, Any]] = {}
        for row in queries["images"].rows(image_ids):
            img = ImageRow(*row)
            out[img.pk] = {"image": img, "_polygons": [], "labels": [], "points": []}
        cats = self.coco_ids
        accepted = Polygon.Status.ACCEPTED.value
        for row in queries["polygons"].rows(image_ids):
            if row[10] == accepted:
                out[row[1]]["_polygons"].append(row)
        for image_id, cat, conf in queries["labels"].rows(image_ids):
            entry = out[image_id]["labels"]
            coco = cats[cat]
            if all(c != coco for c, _ in entry):
                entry.append((coco, conf))
        for image_id, cat, x, y, crowd in queries["points"].rows(image_ids):
            out[image_id]["points"].append({"category_id": cats[cat], "x": _r(x), "y": _r(y), "iscrowd": int(crowd)})
        return out

    def _finish(self, entry: dict[str, Any], instances_json: bool) -> dict[str, Any]:
        """A record of ``_rows`` with its polygons made instances (or their text)."""
        polygons = entry.pop("_polygons", None)
        if polygons is None:  # finished already
            return entry
        img, cats = entry["image"], self.coco_ids
        instances = entry["instances_json" if instances_json else "instances"] = []
        for row in polygons:
            parts, bbox = row[3], row[5]
            if isinstance(parts, str):  # JSON columns come as text (SQLite; Django's PostgreSQL setup)
                parts = _json_loads(parts)
            if isinstance(bbox, str):
                bbox = _json_loads(bbox)
            row = (*row[:3], parts, row[4], bbox, *row[6:10])
            if instances_json:
                instances.append(instance_json(row, cats[row[2]], img.width, img.height))
            else:
                instances.append(instance_of(row, cats[row[2]], img.width, img.height))
        return entry

    def ordered_records(self, image_ids: Iterable[int], *,
                        instances_json: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(id, record)`` in the order given, fetched ``CHUNK`` images at a time.

        A chunk's rows are read at once, but each record is finished (its polygons parsed and
        written out) only as it is asked for: the caller's work per sample (the shard writer
        copying each image into its buffer) then comes at an even pace rather than in bursts
        of 256 between database reads, so the thread that writes and hashes the buffers keeps
        up with it instead of being waited for (a tenth of a 1,000-image export) and then idle.
        """
        batch: list[int] = []
        for pk in image_ids:
            batch.append(pk)
            if len(batch) == CHUNK:
                records = self._rows(batch)
                yield from ((i, self._finish(records[i], instances_json)) for i in batch)
                batch = []
        if batch:
            records = self._rows(batch)
            yield from ((i, self._finish(records[i], instances_json)) for i in batch)


def _confident(min_confidence: float | None) -> Q:
    return Q() if min_confidence is None else (Q(confidence__isnull=True) | Q(confidence__gte=min_confidence))


_COMPILED: dict[tuple[str, float | None], dict[str, "_ChunkQuery"]] = {}


def _compiled_queries(using: str, min_confidence: float | None) -> dict[str, "_ChunkQuery"]:
    """The chunk queries of every export with this confidence filter, compiled once per process
    (1.5 ms an export otherwise, a fiftieth of a 1,000-image one): the ids of the chunk's images
    and of the export's categories are written in later (``_ChunkQuery``), so nothing else of
    an export is in them."""
    key = (using, min_confidence)
    queries = _COMPILED.get(key)
    if queries is None:
        confident = _confident(min_confidence)
        polygons = Polygon._meta.db_table
        queries = {
            # No ordering: ``Image``'s default one joins the project for nothing, rows are
            # keyed by id.
            "images": _ChunkQuery(
                Image.objects.using(using).order_by(), f"{Image._meta.db_table}.id", ImageRow.FIELDS,
            ),
            # The status is read and checked in ``records``, not asked of the database: with
            # ``status = 'accepted'`` in the query, SQLite searches the status index and
            # reads every accepted polygon of the project for each chunk of 256 images (an
            # export grew with the square of the project), where the (image, category) index
            # finds the chunk's polygons alone.
            "polygons": _ChunkQuery(
                Polygon.objects.using(using).filter(_ids_in(f"{polygons}.category_id", [_CATEGORY_MARK]))
                .filter(confident).order_by("image_id", "id"),
                f"{polygons}.image_id",
                ("id", "image_id", "category_id", "parts", "area", "bbox", "is_crowd", "confidence",
                 "point__x", "point__y", "status"),
            ),
            "labels": _ChunkQuery(
                ImageLabel.objects.using(using).filter(stage=Stage.AGGREGATE, present=True)
                .filter(_ids_in(f"{ImageLabel._meta.db_table}.category_id", [_CATEGORY_MARK]))
                .filter(confident).order_by("image_id", "category_id", "id"),
                f"{ImageLabel._meta.db_table}.image_id",
                ("image_id", "category_id", "confidence"),
            ),
            "points": _ChunkQuery(
                InstancePoint.objects.using(using).filter(stage=Stage.AGGREGATE)
                .filter(_ids_in(f"{InstancePoint._meta.db_table}.category_id", [_CATEGORY_MARK]))
                .filter(confident).order_by("image_id", "id"),
                f"{InstancePoint._meta.db_table}.image_id",
                ("image_id", "category_id", "x", "y", "is_crowd"),
            ),
        }
        if len(_COMPILED) >= 64:  # confidence filters are few; bound them all the same
            _COMPILED.clear()
        _COMPILED[key] = queries
    return queries


_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def _json_loads(text: str) -> Any:
    """``json.loads`` of a JSON column, through the scanner directly (``json.loads`` spends a
    third of its time on a short list around it); anything unusual goes through ``json.loads``."""
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_ID_MARK = -7_777_777_777  # no row has this id: it marks where a chunk's ids go in compiled SQL
_CATEGORY_MARK = -7_777_777_778  # and this one where an export's categories go


class _ChunkQuery:
    """A ``values_list`` query over ``column IN (ids)``, compiled to SQL by the ORM once.

    Each chunk runs the same SQL with its own ids written in (see ``_ids_in``), through a
    plain cursor: the ORM would otherwise resolve, compile and convert the same query again
    for every 256 images. Rows come as the database driver gives them, so JSON columns may be
    text and booleans integers; ``records`` reads them accordingly. A query compiled with a
    ``category_id IN (_CATEGORY_MARK)`` filter is used through ``with_categories``.
    """

    def __init__(self, qs: QuerySet, column: str, fields: tuple[str, ...]) -> None:
        query = qs.filter(_ids_in(column, [_ID_MARK])).values_list(*fields)
        self.using = query.db
        sql, params = query.query.sql_with_params()
        mark = f"IN ({_ID_MARK})"
        if sql.count(mark) != 1:
            raise RuntimeError(f"cannot find the id list in the compiled SQL: {sql}")
        self.head, self.tail = sql.split(mark)
        self.params = tuple(params)

    def with_categories(self, listed: str) -> "_ChunkQuery":
        """This query with ``listed`` (``"3,5,8"``, or ``"NULL"`` for none) as its categories."""
        mark = f"IN ({_CATEGORY_MARK})"
        found = (self.head + self.tail).count(mark)
        if not found:
            return self
        if found != 1:
            raise RuntimeError(f"cannot find the category list in the compiled SQL: {self.head}")
        bound = copy.copy(self)
        bound.head = self.head.replace(mark, f"IN ({listed})")
        bound.tail = self.tail.replace(mark, f"IN ({listed})")
        return bound

    def rows(self, ids: list[int]) -> list[tuple]:
        listed = ",".join(str(int(i)) for i in ids) or "NULL"
        with connections[self.using].cursor() as cursor:
            cursor.execute(f"{self.head}IN ({listed}){self.tail}", self.params)
            return cursor.fetchall()


def _ids_in(column: str, ids: list[int]) -> RawSQL:
    """``column IN (ids)`` with the ids written into the SQL as integers.

    ``pk__in=[...]`` makes Django resolve and prepare every value, which for a chunk of 256
    images, four queries a chunk, cost a tenth of an export. The ids are our own integer keys,
    passed through ``int``, so writing them into the SQL is safe.
    """
    listed = ",".join(str(int(i)) for i in ids) or "NULL"
    return RawSQL(f"{column} IN ({listed})", [], output_field=BooleanField())


def rle_uncompressed(parts: list[list[float]], width: int, height: int) -> tuple[dict[str, Any], float, list[float]]:
    """A crowd region as COCO's uncompressed RLE (as COCO's own crowd annotations), area, bbox."""
    # The loader's decoder, imported here so that the web tier never loads torch at start-up.
    from datasets.loader.annotator_loader import rle_counts

    rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    counts = rle_counts(rle)  # pycocotools' compressed string, spelled out as run lengths
    area = float(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [height, width], "counts": counts}, area, bbox


def _r(value: float) -> float:
    """Coordinates to a hundredth of a pixel, as COCO writes them: shorter, faster to parse."""
    return round(float(value), 2)


def instance_of(row: tuple, category_id: int, width: int, height: int) -> dict[str, Any]:
    """An accepted polygon (a ``records`` row) as an instance of the export."""
    pk, _, _, parts, area, bbox, is_crowd, confidence, px, py = row
    points = [[_r(px), _r(py)]] if px is not None else []
    if is_crowd:
        segmentation, area, bbox = rle_uncompressed(parts, width, height)
    else:  # _r inlined: a polygon has dozens of coordinates
        segmentation = [[round(float(v), 2) for v in part] for part in parts]
        area, bbox = _r(area), [round(float(v), 2) for v in bbox]
    return {
        "id": pk,
        "category_id": category_id,
        "bbox": bbox,
        "area": area,
        "iscrowd": int(is_crowd),
        "segmentation": segmentation,
        "points": points,
        "confidence": confidence,
    }


_FORMATS: dict[int, str] = {}  # "%.2f," repeated n times, by n


def _rounded_values(values: Sequence[float]) -> str | None:
    """``coordinates_json``'s numbers, each followed by a comma ("10.0,60.5,"), or None."""
    try:
        if not (-1e9 < min(values) and max(values) < 1e9):
            return None
        n = len(values)
        fmt = _FORMATS.get(n)
        if fmt is None:
            fmt = "%.2f," * n
            if n <= 4096:
                _FORMATS[n] = fmt
        text = fmt % tuple(values)  # one C call for them all
    except TypeError:
        return None
    if "n" in text:  # nan, inf: min and max may not see them
        return None
    return text.replace("0,", ",")


def coordinates_json(values: Sequence[float]) -> str | None:
    """``[round(float(v), 2) for v in values]`` as the sample JSON writes it (``float.__repr__``
    of each), built by one C-level format rather than one ``round`` and one ``repr`` per
    coordinate.

    ``"%.2f"`` rounds as ``round(v, 2)`` does (both round the exact binary value to two places,
    halves to even), and for ``|v| < 1e9`` the shortest text that reads back as that float,
    which ``repr`` writes, is those two places without a trailing zero ("10.00" -> "10.0",
    "60.50" -> "60.5"); each number's last ``0,`` loses its zero. None when a value is out of
    that range or not a number: the caller then takes the plain way.
    """
    if not values:
        return "[]"
    text = _rounded_values(values)
    return None if text is None else "[" + text[:-1] + "]"


_INSTANCE_TEMPLATES: dict[tuple[bool, tuple[int, ...]], str] = {}


def _instance_template(key: tuple[bool, tuple[int, ...]]) -> str:
    """The text of an instance (``instance_json``) with ``%s`` for its numbers, category, confidence
    and id, for a polygon with a point or not and parts of these lengths."""
    template = _INSTANCE_TEMPLATES.get(key)
    if template is None:
        point, lengths = key
        segmentation = "],[".join(",".join(["%s"] * n) for n in lengths)
        template = ('{"area":%s,"bbox":[%s,%s,%s,%s],"category_id":%s,"confidence":%s,"id":%s,"iscrowd":0,'
                    f'"points":{"[[%s,%s]]" if point else "[]"},"segmentation":[[{segmentation}]]}}')
        if len(_INSTANCE_TEMPLATES) >= 4096:  # shapes are few; bound them all the same
            _INSTANCE_TEMPLATES.clear()
        _INSTANCE_TEMPLATES[key] = template
    return template


def instance_json(row: tuple, category_id: int, width: int, height: int) -> str:
    """``instance_of`` as the sample JSON's text (sorted keys, no spaces): the same bytes as
    encoding its dict, without building the dict and a float per coordinate. All the numbers
    of a polygon (area, bbox, point, parts) are formatted by one ``%`` (see
    ``coordinates_json``) and put into a template of the instance's shape by another. Crowd
    regions and anything unusual go through ``instance_of`` and the encoder."""
    pk, _, _, parts, area, bbox, is_crowd, confidence, px, py = row
    if (not is_crowd and type(pk) is int and type(category_id) is int and type(parts) is list and parts
            and type(bbox) is list and len(bbox) == 4 and all(type(part) is list for part in parts)):
        if confidence is None:
            conf = "null"
        elif type(confidence) is float and -1e300 < confidence < 1e300:
            conf = float.__repr__(confidence)
        else:
            conf = None
        numbers = [area, *bbox] if px is None else [area, *bbox, px, py]
        for part in parts:
            numbers += part
        text = _rounded_values(numbers)
        if text is not None and conf is not None:
            values = text.split(",")  # the last one empty: each number ends with a comma
            values[-1:] = ()
            return _instance_template((px is not None, tuple(map(len, parts)))) % (
                *values[:5], category_id, conf, pk, *values[5:])
    return encode_json(instance_of(row, category_id, width, height))


def image_entry(img: Image, key: str, ext: str, license_ids: dict[str, int]) -> dict[str, Any]:
    """An image as COCO's ``images`` list has it, with our license and attribution."""
    return {
        "id": img.pk,
        "file_name": f"{key}.{ext}",
        "width": img.width,
        "height": img.height,
        "license": license_ids.get(img.license, 0),
        "attribution": img.attribution,
        "source_url": img.source_url,
        "sha256": img.sha256,
        "exif_orientation": img.exif_orientation,
    }
