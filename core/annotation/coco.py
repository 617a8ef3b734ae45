"""COCO instance-segmentation JSON: write lesion masks exactly, read other tools' files defensively.

Conventions (see `/work/shared/notes/evaluation-facts.md`):

- Pixel (row r, col c) covers the square [c, c+1] x [r, r+1] in COCO (x, y) coordinates.
- Masks are bool (H, W) numpy arrays in (row, col); RLE is pycocotools' column-major run length
  encoding, always written compressed (`counts` a str) with `size` [H, W].
- Segmentation rule on export: a mask is written as polygons when it has no holes and its lossless
  pixel-edge polygons rasterise back to exactly the same pixels through pycocotools; otherwise (holes,
  or `force_rle`) as compressed RLE. Either way `annToMask` returns our mask bit for bit.
- `iscrowd` is always 0, also for RLE. `iscrowd=1` means "a crowd region" to COCOeval, which then
  ignores the object when scoring (a lesion with a hole would silently drop out of AP). pycocotools
  picks the decoder from the segmentation's type (list = polygons, dict = RLE), never from `iscrowd`,
  so `annToMask`, `loadRes` and `COCOeval(iouType="segm")` all handle RLE with iscrowd=0.
- `area` is the mask's pixel count, `bbox` is [x, y, w, h] of the mask in pixel edges.
- dermaseg's own data (measurements, editable polygons, provenance) goes under the key "dermaseg" of
  each image / annotation, which COCO readers ignore.

Import validates the whole file before returning anything; every problem is a `CocoError` that names
the entry (e.g. "annotation id 17: ...").
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from dermaseg.core.annotation.geometry import mask_to_polygons
from dermaseg.core.errors import CocoError, read_user_file

MAX_FILE_BYTES = 1 << 30  # refuse COCO files above 1 GiB before parsing
MAX_SIDE = 100_000  # px; an image side above this is a typo or an attack, not a dermoscopy image
MAX_PIXELS = 200_000_000  # width x height of one image
MAX_ID = 2**53  # ids must survive a round trip through JavaScript and SQLite
MAX_POLYGON_NUMBERS = 2_000_000  # per annotation, all parts together
MIN_POLYGON_NUMBERS = 6  # 3 points; pycocotools reads a 4-number list as a bbox
MAX_DEPTH = 64  # nesting of arrays/objects; COCO needs about 8, dermaseg's extras about 10
MAX_STRING_CHARS = 4096  # a file_name or category name; longer is not a path or a label

Json = Any  # a value as `json.loads` returns it


# --------------------------------------------------------------------------------------------------
# RLE


@dataclass(frozen=True)
class Rle:
    """A mask as pycocotools compressed RLE: `counts` (str) for an image of `height` x `width` px."""

    height: int
    width: int
    counts: str

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Rle:
        """Encode a bool or 0/1 (H, W) array (column-major, as pycocotools wants)."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f"a mask must be 2-D (H, W), got shape {m.shape}")
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8, copy=False) != 0, dtype=np.uint8))
        return cls(int(r["size"][0]), int(r["size"][1]), r["counts"].decode("ascii"))

    def to_coco(self) -> dict[str, Any]:
        """The JSON form: {"size": [H, W], "counts": str}."""
        return {"size": [self.height, self.width], "counts": self.counts}

    def _c(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}

    def decode(self) -> np.ndarray:
        """bool (H, W) array."""
        return mask_utils.decode(self._c()).astype(bool)

    @property
    def area(self) -> int:
        """Foreground pixel count."""
        return int(mask_utils.area(self._c()))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """[x, y, w, h] in pixel edges; (0, 0, 0, 0) for an empty mask."""
        x, y, w, h = mask_utils.toBbox(self._c())
        return int(x), int(y), int(w), int(h)


def decode_counts_string(counts: str) -> list[int]:
    """Decode pycocotools' compressed `counts` string into run lengths, without trusting it.

    Mirrors `rleFrString` in pycocotools' maskApi.c (6-bit groups offset by 48, sign bit 0x10,
    runs from the fourth on stored as a difference to the run two before). Raises ValueError on a
    character outside '0'..'o', a truncated value or an over-long value.
    """
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the counts string ends in the middle of a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {counts[p]!r} at position {p} of the counts string")
            if k >= 13:  # 13 groups of 5 bits already exceed any 64-bit run length
                raise ValueError("a run length in the counts string is too long")
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


# --------------------------------------------------------------------------------------------------
# Export


def mask_has_holes(mask: np.ndarray) -> bool:
    """True when some background pixels of the bool (H, W) mask are enclosed by foreground."""
    return any(p.holes for p in mask_to_polygons(np.asarray(mask, dtype=bool), 0.0).parts)


def exact_coco_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] that pycocotools rasterises to exactly `mask`.

    The polygons are the mask's pixel-edge outline (`geometry.mask_to_polygons` with tolerance 0).
    None when the mask is empty, has holes (COCO polygons of one object are merged as a union, so a
    hole cannot be written), or the outline does not rasterise back bit for bit through pycocotools
    (checked every time, so a polygon export is never lossy).
    """
    m = np.asarray(mask, dtype=bool)
    parts = mask_to_polygons(m, 0.0).parts
    if not parts or any(p.holes for p in parts):
        return None
    polys = [[float(v) for xy in p.exterior for v in xy] for p in parts]
    if any(len(p) < MIN_POLYGON_NUMBERS for p in polys):
        return None
    h, w = m.shape
    back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)
    return polys if np.array_equal(back, m) else None


def encode_segmentation(mask: np.ndarray, *, force_rle: bool = False) -> tuple[Json, str]:
    """(segmentation, kind) for a bool (H, W) mask; kind is "polygon" or "rle" (see module rule)."""
    if not force_rle:
        polys = exact_coco_polygons(mask)
        if polys is not None:
            return polys, "polygon"
    return Rle.from_mask(mask).to_coco(), "rle"


def annotation_dict(
    ann_id: int,
    image_id: int,
    category_id: int,
    mask: np.ndarray,
    *,
    force_rle: bool = False,
    extra: Mapping[str, Json] | None = None,
) -> dict[str, Json]:
    """One COCO annotation for a non-empty bool (H, W) mask; `extra` goes under "dermaseg"."""
    m = np.asarray(mask, dtype=bool)
    rle = Rle.from_mask(m)
    if rle.area == 0:
        raise CocoError(f"annotation id {ann_id}: the mask is empty")
    seg, kind = encode_segmentation(m, force_rle=force_rle)
    ann: dict[str, Json] = {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": seg,
        "area": rle.area,
        "bbox": list(rle.bbox),
        "iscrowd": 0,
    }
    ann["dermaseg"] = {"encoding": kind, **(dict(extra) if extra else {})}
    return ann


def image_dict(
    image_id: int, file_name: str, width: int, height: int, extra: Mapping[str, Json] | None = None
) -> dict[str, Json]:
    """One COCO image entry; `file_name` is relative to the images folder, with '/' separators."""
    d: dict[str, Json] = {
        "id": int(image_id),
        "file_name": file_name,
        "width": int(width),
        "height": int(height),
    }
    if extra:
        d["dermaseg"] = dict(extra)
    return d


def dataset_dict(
    images: Sequence[Mapping[str, Json]],
    annotations: Sequence[Mapping[str, Json]],
    categories: Sequence[tuple[int, str]],
    info: Mapping[str, Json] | None = None,
) -> dict[str, Json]:
    """A whole COCO dataset; `categories` are (id, name) pairs, supercategory "lesion"."""
    return {
        "info": dict(info or {}),
        "licenses": [],
        "images": list(images),
        "categories": [{"id": int(i), "name": n, "supercategory": "lesion"} for i, n in categories],
        "annotations": list(annotations),
    }


def write_json_atomic(data: Json, path: str | Path) -> None:
    """Write JSON to `path` through a temporary file in the same folder, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps uses the C encoder; json.dump to a file streams through the slow Python one
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_png_mask(mask: np.ndarray, path: str | Path) -> None:
    """Save a bool (H, W) mask as an 8-bit greyscale PNG, 0 background and 255 lesion."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8), mode="L").save(path)


# --------------------------------------------------------------------------------------------------
# Import


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
