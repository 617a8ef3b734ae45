"""Writing COCO: a lesion mask as exact polygons or compressed RLE, image / annotation / dataset entries,
the JSON file (atomically) and mask PNGs. The rules are in the package's docstring."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from dermaseg.core.annotation.coco.rle import MIN_POLYGON_NUMBERS, Json, Rle
from dermaseg.core.annotation.geometry import mask_to_polygons
from dermaseg.core.errors import CocoError


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
