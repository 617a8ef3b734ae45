"""Reading other tools' COCO files defensively: the whole file is validated before anything is returned,
and every problem is a `CocoError` that names the entry (e.g. "annotation id 17: ...")."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from dermaseg.core.annotation.coco.rle import MIN_POLYGON_NUMBERS, Json, Rle, decode_counts_string
from dermaseg.core.errors import CocoError, read_user_file

MAX_FILE_BYTES = 1 << 30  # refuse COCO files above 1 GiB before parsing
MAX_SIDE = 100_000  # px; an image side above this is a typo or an attack, not a dermoscopy image
MAX_PIXELS = 200_000_000  # width x height of one image
MAX_ID = 2**53  # ids must survive a round trip through JavaScript and SQLite
MAX_POLYGON_NUMBERS = 2_000_000  # per annotation, all parts together
MAX_DEPTH = 64  # nesting of arrays/objects; COCO needs about 8, dermaseg's extras about 10
MAX_STRING_CHARS = 4096  # a file_name or category name; longer is not a path or a label


@dataclass(frozen=True)
class CocoImage:
    """An image entry of a parsed COCO file. `extra` is its "dermaseg" dict ({} when absent)."""

    id: int
    file_name: str
    width: int
    height: int
    extra: Mapping[str, Json] = field(default_factory=dict)


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str


@dataclass(frozen=True)
class CocoAnnotation:
    """A validated annotation: its mask as canonical compressed RLE of the image's size.

    kind: "polygon" or "rle" (how the file stored it); polygons: the file's polygon parts when kind
    is "polygon" (flat [x0, y0, ...] lists, degenerate parts dropped), else None.
    """

    id: int
    image_id: int
    category_id: int
    rle: Rle
    kind: str
    iscrowd: int
    polygons: tuple[tuple[float, ...], ...] | None
    extra: Mapping[str, Json] = field(default_factory=dict)


@dataclass(frozen=True)
class CocoDataset:
    images: tuple[CocoImage, ...]
    categories: tuple[CocoCategory, ...]
    annotations: tuple[CocoAnnotation, ...]

    def image(self, image_id: int) -> CocoImage:
        return next(i for i in self.images if i.id == image_id)

    def category(self, category_id: int) -> CocoCategory:
        return next(c for c in self.categories if c.id == category_id)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(source: str | Path | bytes) -> Json:
    """Parse a COCO file (a path, or its bytes) into Python values, or raise CocoError."""
    if isinstance(source, bytes):
        data, where = source, "the COCO data"
    else:
        path = Path(source)
        where = str(path)
        data = read_user_file(path, where, "a COCO JSON file", CocoError, MAX_FILE_BYTES)
    if len(data) > MAX_FILE_BYTES:
        raise CocoError(f"{where}: larger than {MAX_FILE_BYTES >> 20} MiB; refusing to read it")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise CocoError(f"{where}: the JSON is nested too deeply to be a COCO file") from None
    except UnicodeDecodeError as e:
        raise CocoError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise CocoError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except ValueError as e:  # NaN/Infinity, or an integer with more digits than Python will parse
        if "integer string conversion" in str(e):
            raise CocoError(f"{where}: not valid COCO JSON (a number with thousands of digits)") from None
        raise CocoError(f"{where}: not valid COCO JSON ({e})") from None


def _is_int(v: Json) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Json) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond float range (JSON allows any number of digits)
        return False


def _id(entry: Json, what: str, index: int) -> int:
    if not isinstance(entry, dict):
        raise CocoError(f"{what} #{index}: expected an object, got {type(entry).__name__}")
    if "id" not in entry:
        raise CocoError(f"{what} #{index}: missing key 'id'")
    v = entry["id"]
    if not _is_int(v) or not 0 <= v < MAX_ID:
        raise CocoError(f"{what} #{index}: 'id' must be a whole number from 0 to 2^53, got {v!r:.40}")
    return v


def _require(entry: dict[str, Json], keys: Iterable[str], label: str) -> None:
    for k in keys:
        if k not in entry:
            raise CocoError(f"{label}: missing key {k!r}")


def _parse_image(entry: Json, index: int) -> CocoImage:
    iid = _id(entry, "image", index)
    label = f"image id {iid}"
    _require(entry, ("file_name", "width", "height"), label)
    name, w, h = entry["file_name"], entry["width"], entry["height"]
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise CocoError(f"{label}: 'file_name' must be a non-empty string")
    if len(name) > MAX_STRING_CHARS:
        raise CocoError(f"{label}: 'file_name' is {len(name)} characters long (at most {MAX_STRING_CHARS})")
    for key, v in (("width", w), ("height", h)):
        if not _is_int(v) or not 1 <= v <= MAX_SIDE:
            raise CocoError(f"{label}: '{key}' must be a whole number of pixels from 1 to {MAX_SIDE}, got {v!r:.40}")
    if w * h > MAX_PIXELS:
        raise CocoError(f"{label}: {w}x{h} is above the limit of {MAX_PIXELS // 1_000_000} megapixels")
    extra = entry.get("dermaseg")
    return CocoImage(iid, name, w, h, extra if isinstance(extra, dict) else {})


def _parse_category(entry: Json, index: int) -> CocoCategory:
    cid = _id(entry, "category", index)
    _require(entry, ("name",), f"category id {cid}")
    name = entry["name"]
    if not isinstance(name, str) or not name.strip():
        raise CocoError(f"category id {cid}: 'name' must be a non-empty string")
    if len(name) > MAX_STRING_CHARS:
        raise CocoError(f"category id {cid}: 'name' is {len(name)} characters long (at most {MAX_STRING_CHARS})")
    return CocoCategory(cid, name.strip())


def _polygons_to_rle(seg: list[Json], img: CocoImage, label: str) -> tuple[Rle, tuple[tuple[float, ...], ...]]:
    parts: list[list[float]] = []
    total = 0
    for k, poly in enumerate(seg):
        if not isinstance(poly, list):
            raise CocoError(f"{label}: polygon {k} must be a list of numbers [x0, y0, x1, y1, ...]")
        total += len(poly)
        if total > MAX_POLYGON_NUMBERS:
            raise CocoError(f"{label}: more than {MAX_POLYGON_NUMBERS} polygon coordinates")
        if not all(_is_num(v) for v in poly):
            raise CocoError(f"{label}: polygon {k} holds something that is not a finite number")
        if len(poly) % 2:
            raise CocoError(f"{label}: polygon {k} has an odd count of numbers ({len(poly)}); need x, y pairs")
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        bad = (xy[:, 0] < 0) | (xy[:, 0] > img.width) | (xy[:, 1] < 0) | (xy[:, 1] > img.height)
        if bad.any():
            x, y = xy[int(np.argmax(bad))]
            raise CocoError(
                f"{label}: polygon {k} has point ({x:g}, {y:g}) outside the {img.width}x{img.height} image "
                f"(image id {img.id})"
            )
        if len(poly) >= MIN_POLYGON_NUMBERS:  # fewer than 3 points encloses nothing
            parts.append([float(v) for v in poly])
    if not parts:
        raise CocoError(f"{label}: the segmentation has no polygon with 3 or more points")
    r = mask_utils.merge(mask_utils.frPyObjects(parts, img.height, img.width))
    rle = Rle(img.height, img.width, r["counts"].decode("ascii"))
    return rle, tuple(tuple(p) for p in parts)


def _rle_dict_to_rle(seg: dict[str, Json], img: CocoImage, label: str) -> Rle:
    if "size" not in seg or "counts" not in seg:
        raise CocoError(f"{label}: an RLE segmentation needs keys 'size' and 'counts'")
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise CocoError(f"{label}: RLE 'size' must be [height, width], got {size!r:.60}")
    if size != [img.height, img.width]:
        raise CocoError(
            f"{label}: RLE size {size} does not match image id {img.id} ({img.height} high, {img.width} wide)"
        )
    counts = seg["counts"]
    if isinstance(counts, str):
        try:
            runs = decode_counts_string(counts)
        except ValueError as e:
            raise CocoError(f"{label}: bad compressed RLE: {e}") from None
    elif isinstance(counts, list):
        if not all(_is_int(v) for v in counts):
            raise CocoError(f"{label}: uncompressed RLE 'counts' must be whole numbers")
        runs = counts
    else:
        raise CocoError(f"{label}: RLE 'counts' must be a string (compressed) or a list of numbers")
    n = img.height * img.width
    if any(v < 0 for v in runs):
        raise CocoError(f"{label}: RLE has a negative run length")
    if sum(runs) != n:
        raise CocoError(f"{label}: RLE run lengths add up to {sum(runs)} pixels, the image has {n}")
    r = mask_utils.frPyObjects(
        {"size": [img.height, img.width], "counts": [int(v) for v in runs]}, img.height, img.width
    )
    return Rle(img.height, img.width, r["counts"].decode("ascii"))


def _parse_annotation(
    entry: Json, index: int, images: Mapping[int, CocoImage], categories: Mapping[int, CocoCategory]
) -> CocoAnnotation:
    aid = _id(entry, "annotation", index)
    label = f"annotation id {aid}"
    _require(entry, ("image_id", "category_id", "segmentation"), label)
    iid, cid = entry["image_id"], entry["category_id"]
    if not _is_int(iid) or iid not in images:
        raise CocoError(f"{label}: image_id {iid!r:.40} is not among the file's images")
    if not _is_int(cid) or cid not in categories:
        raise CocoError(f"{label}: category_id {cid!r:.40} is not among the file's categories")
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        raise CocoError(f"{label}: 'iscrowd' must be 0 or 1, got {iscrowd!r:.40}")
    img = images[iid]
    seg = entry["segmentation"]
    polygons = None
    if isinstance(seg, list):
        rle, polygons = _polygons_to_rle(seg, img, label)
        kind = "polygon"
    elif isinstance(seg, dict):
        rle, kind = _rle_dict_to_rle(seg, img, label), "rle"
    else:
        raise CocoError(f"{label}: 'segmentation' must be a list of polygons or an RLE object")
    if rle.area == 0:
        raise CocoError(f"{label}: the segmentation covers no pixel")
    extra = entry.get("dermaseg")
    return CocoAnnotation(aid, iid, cid, rle, kind, int(iscrowd), polygons, extra if isinstance(extra, dict) else {})


def _list(data: dict[str, Json], key: str) -> list[Json]:
    if key not in data:
        raise CocoError(f"the COCO file has no {key!r} list (missing key {key!r})")
    v = data[key]
    if not isinstance(v, list):
        raise CocoError(f"the COCO file's {key!r} must be a list, got {type(v).__name__}")
    return v


def _unique(ids: Iterable[int], what: str) -> None:
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise CocoError(f"{what} id {i}: appears more than once")
        seen.add(i)


def _check_depth(data: Json) -> None:
    """CocoError when arrays/objects nest deeper than MAX_DEPTH (iterative: no recursion to exhaust)."""
    stack: list[tuple[Json, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CocoError(f"the JSON is nested more than {MAX_DEPTH} levels deep; a COCO file needs about 8")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))


def parse_coco(data: Json) -> CocoDataset:
    """Validate parsed COCO JSON (from `load_json`) into a `CocoDataset`, or raise `CocoError`.

    Checks keys, types, finite in-range numbers, unique ids, references between entries, polygon
    points inside [0, W] x [0, H], RLE sizes and run lengths. Polygons and uncompressed RLE are
    converted to canonical compressed RLE. `bbox` and `area` in the file are ignored (recomputed).
    """
    if not isinstance(data, dict):
        raise CocoError(
            f"a COCO file is a JSON object with images, categories and annotations, not a {type(data).__name__}"
        )
    _check_depth(data)
    images = [_parse_image(e, i) for i, e in enumerate(_list(data, "images"))]
    _unique((i.id for i in images), "image")
    categories = [_parse_category(e, i) for i, e in enumerate(_list(data, "categories"))]
    _unique((c.id for c in categories), "category")
    by_image = {i.id: i for i in images}
    by_cat = {c.id: c for c in categories}
    raw_anns = _list(data, "annotations")
    _unique((_id(e, "annotation", i) for i, e in enumerate(raw_anns)), "annotation")
    anns = [_parse_annotation(e, i, by_image, by_cat) for i, e in enumerate(raw_anns)]
    return CocoDataset(tuple(images), tuple(categories), tuple(anns))


def read_coco(source: str | Path | bytes) -> CocoDataset:
    """`parse_coco(load_json(source))`."""
    return parse_coco(load_json(source))
