"""Property-based fuzzing (hypothesis): whatever goes in, only the module's named error comes out.

- `load_image`: random bytes and mutated real JPEG/PNG/TIFF/BMP bytes -> a `LesionImage` or `ImageLoadError`;
- `Prompts.validated` / `Segmenter.predict`: random boxes, clicks, labels -> a mask or `PromptError`;
- `Polygons.from_json` + `repair_polygons`: random JSON and extreme rings -> a valid outline or `GeometryError`;
- `parse_coco` / `read_coco`: mutated COCO documents and bytes -> a dataset or `CocoError`;
- `Project.import_coco`: random "dermaseg" extras -> an import or `CocoError`, the database intact.

Examples are bounded (`EXAMPLES`, no deadline, no example database) so the file runs in well under
60 s on two busy cores; `FUZZ_SCALE=10` in the environment multiplies every budget for a longer run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from typing import Any

import numpy as np
import pytest
from corpus import IMAGE_H, IMAGE_W, base_image, coco_doc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dermaseg.core.annotation.coco import parse_coco, read_coco
from dermaseg.core.annotation.geometry import Polygons, repair_polygons
from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import CocoError, GeometryError, ImageLoadError, PromptError, StoreError
from dermaseg.core.image import LesionImage, load_image
from dermaseg.core.segment.prompts import Prompts

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
EXAMPLES = {"bytes": 300, "mutate": 300, "prompts": 500, "predict": 60, "polygons": 300, "coco": 400, "store": 60}


def budget(kind: str) -> settings:
    return settings(
        max_examples=EXAMPLES[kind] * SCALE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# Any JSON value, nested a little; numbers include the extremes JSON can carry.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([10**400, -(10**400), 2**53, 2**63, -1, 0])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30,
)
numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-10, max_value=IMAGE_W + 10)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.integers(min_value=-5, max_value=IMAGE_W + 5)
)
anything = numbers | st.none() | st.text(max_size=5) | st.booleans() | st.lists(numbers, max_size=3)


# --------------------------------------------------------------------------------------- images

BASES = {fmt: base_image(fmt) for fmt in ("JPEG", "PNG", "TIFF", "BMP")}


@budget("bytes")
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_image_load_error(data: bytes) -> None:
    try:
        img = load_image(data, name="fuzz")
    except ImageLoadError as e:
        assert str(e).startswith("fuzz")
    else:
        assert img.rgb.dtype == np.uint8 and img.rgb.ndim == 3 and img.rgb.shape[2] == 3


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """A real image with byte flips, a truncation, an insertion or a header overwrite."""
    data = bytearray(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "header", "zero-run"]))
        n = len(data)
        if n < 2:
            break
        at = draw(st.integers(0, n - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "header":
            pos = draw(st.integers(0, min(n - 1, 40)))
            data[pos : pos + 4] = draw(st.binary(min_size=4, max_size=4))
        else:
            data[at : at + 64] = bytes(min(64, n - at))
    return bytes(data)


@budget("mutate")
@given(mutated_image())
def test_mutated_real_images_only_raise_image_load_error(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF" etc. are warnings, not failures
        try:
            img = load_image(data, name="fuzz.img")
        except ImageLoadError:
            return
    assert img.rgb.dtype == np.uint8 and img.rgb.shape[2] == 3 and min(img.rgb.shape[:2]) >= 16


# -------------------------------------------------------------------------------------- prompts

points = st.lists(st.tuples(numbers, numbers) | anything, max_size=70)
labels_for = st.sampled_from([0, 1]) | anything
boxes = st.none() | st.tuples(numbers, numbers, numbers, numbers) | anything


@st.composite
def prompt_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    pts = draw(points)
    n_labels = len(pts) if draw(st.booleans()) else draw(st.integers(0, 3))
    return {"box": draw(boxes), "points": tuple(pts), "labels": tuple(draw(labels_for) for _ in range(n_labels))}


@budget("prompts")
@given(prompt_kwargs(), st.integers(1, 5000), st.integers(1, 5000))
def test_random_prompts_only_raise_prompt_error(kwargs: dict[str, Any], w: int, h: int) -> None:
    try:
        p = Prompts(**kwargs).validated(w, h)
    except PromptError:
        return
    assert not p.is_empty and len(p.points) <= 64
    for x, y in p.points:
        assert 0 <= x <= w and 0 <= y <= h
    if p.box is not None:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 >= 1 and y1 - y0 >= 1
    assert p.validated(w, h) == p  # validation is idempotent


@pytest.fixture(scope="module")
def segmenter(engine):
    seg = engine.segmenter()
    seg.set_image(LesionImage.from_array(np.asarray(load_image(base_image("PNG")).rgb)))
    return seg


@budget("predict")
@given(prompt_kwargs(), st.sampled_from([0, 1, 2, 3, "best", 4, -1, "x", None]))
def test_random_prompts_through_the_segmenter(segmenter, kwargs: dict[str, Any], head: Any) -> None:
    try:
        result = segmenter.predict(Prompts(**kwargs), head=head)
    except PromptError:
        return
    assert result.mask.shape == (IMAGE_H, IMAGE_W) and result.mask.dtype == bool
    assert math.isfinite(result.score)


# ------------------------------------------------------------------------------------- polygons

coords = (
    st.floats(min_value=-100, max_value=200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**20), 10**20)
    | st.sampled_from([0, IMAGE_W, IMAGE_H, 1e308, -1e308, 5e-324])
)
rings = st.lists(st.tuples(coords, coords).map(list), min_size=0, max_size=12)


@st.composite
def polygon_json(draw: st.DrawFn) -> Any:
    """Mostly well-shaped polygon JSON with wild numbers; sometimes any JSON at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    parts = [
        {"exterior": draw(rings), "holes": draw(st.lists(rings, max_size=2))} for _ in range(draw(st.integers(0, 4)))
    ]
    side = st.integers(-2, 200) | st.sampled_from([10**7, 10**400, 1.5, "64"])
    doc: dict[str, Any] = {"width": draw(side), "height": draw(side), "parts": parts}
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["width", "height", "parts"]))] = draw(json_values)
    return doc


@budget("polygons")
@given(polygon_json())
@example(  # found by this test: GEOS threw TopologyException from make_valid on coordinates near 1e308
    {"width": 1, "height": 1, "parts": [{"exterior": [[0, 0], [0, 8.9e307], [0, 0], [2, 3.6e13], [-5e294, 0]]}]}
)
def test_random_polygons_only_raise_geometry_error(doc: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GEOS overflow on 1e308 is a warning
        try:
            result = repair_polygons(Polygons.from_json(doc))
        except GeometryError:
            return
    polys = result.polygons
    assert polys.parts
    frame_w, frame_h = polys.width, polys.height
    for part in polys.parts:
        assert part.to_shapely().is_valid
        xs = [x for x, _ in part.exterior]
        ys = [y for _, y in part.exterior]
        assert min(xs) >= 0 and max(xs) <= frame_w and min(ys) >= 0 and max(ys) <= frame_h
    json.dumps(polys.to_json(), allow_nan=False)  # what the store saves is valid JSON


# ----------------------------------------------------------------------------------------- COCO

PATHS = [
    ("images",),
    ("categories",),
    ("annotations",),
    ("images", 0),
    ("images", 0, "id"),
    ("images", 0, "file_name"),
    ("images", 0, "width"),
    ("images", 0, "height"),
    ("images", 0, "dermaseg"),
    ("categories", 0, "id"),
    ("categories", 0, "name"),
    ("annotations", 0),
    ("annotations", 0, "id"),
    ("annotations", 0, "image_id"),
    ("annotations", 0, "category_id"),
    ("annotations", 0, "iscrowd"),
    ("annotations", 0, "segmentation"),
    ("annotations", 0, "segmentation", 0),
    ("annotations", 0, "segmentation", 0, 2),
    ("annotations", 0, "dermaseg"),
]
rle_segmentations = st.fixed_dictionaries(
    {"size": st.lists(st.integers(-2, 100) | json_scalars, max_size=3), "counts": st.text(max_size=30) | json_values}
) | st.fixed_dictionaries({"size": st.just([IMAGE_H, IMAGE_W]), "counts": st.lists(st.integers(-5, 4000), max_size=5)})


@st.composite
def coco_json(draw: st.DrawFn) -> Any:
    """A valid document with 1-4 places replaced by random JSON (or an RLE-shaped object)."""
    doc = coco_doc()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        value = draw(json_values | rle_segmentations if path[-1] == "segmentation" else json_values)
        node: Any = doc
        for key in path[:-1]:
            if _has(node, key):
                node = node[key]
            else:
                break
        else:
            last = path[-1]
            if isinstance(node, dict) or _has(node, last):
                node[last] = value
    return doc


def _has(node: Any, key: Any) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and key < len(node)


@budget("coco")
@given(coco_json())
def test_random_coco_only_raises_coco_error(doc: Any) -> None:
    try:
        ds = parse_coco(doc)
    except CocoError:
        return
    for a in ds.annotations:
        img = ds.image(a.image_id)
        assert a.rle.area > 0 and (a.rle.height, a.rle.width) == (img.height, img.width)


@budget("coco")
@given(coco_json(), st.integers(0, 400), st.binary(max_size=8))
def test_random_coco_bytes_only_raise_coco_error(doc: Any, cut: int, junk: bytes) -> None:
    raw = json.dumps(doc).encode()
    raw = raw[: len(raw) - cut] + junk if cut else raw
    with contextlib.suppress(CocoError):
        read_coco(raw)


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fuzzproj")
    (folder / "a.png").write_bytes(base_image("PNG"))
    p = Project.init(folder)
    yield p
    p.close()


@budget("store")
@given(
    st.dictionaries(st.sampled_from(["mm_per_px", "calibration_source", "status", "file_sha256"]), json_values),
    st.dictionaries(st.sampled_from(["polygons", "tolerance_px", "metrics", "provenance"]), json_values),
)
def test_random_extras_import_or_coco_error(fuzz_project: Project, image_extra: dict, ann_extra: dict) -> None:
    doc = coco_doc(image={"dermaseg": image_extra}, annotation={"dermaseg": ann_extra})
    with contextlib.suppress(CocoError, StoreError):
        fuzz_project.import_coco(json.dumps(doc).encode(), replace=True)
    rec = fuzz_project.image_by_path("a.png")
    assert rec.calibration is None or math.isfinite(rec.calibration.mm_per_px)
    for a in fuzz_project.annotations():
        assert a.tolerance_px is None or math.isfinite(a.tolerance_px)


def test_fuzz_project_database_is_sound(fuzz_project: Project) -> None:
    assert fuzz_project.integrity_check() == "ok"
