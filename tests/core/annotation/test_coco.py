"""COCO export is exact for real consumers (pycocotools, supervision); import refuses bad files by name."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dermaseg.core.annotation import coco
from dermaseg.core.errors import CocoError


def _quiet(fn, *args, **kwargs):
    """pycocotools prints progress to stdout; keep test output readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _ring(h: int = 40, w: int = 50) -> np.ndarray:
    """A square lesion with a square hole."""
    m = np.zeros((h, w), dtype=bool)
    m[5:30, 10:40] = True
    m[12:20, 18:30] = False
    return m


def _with_hole(mask: np.ndarray) -> np.ndarray:
    """Punch a hole in the middle of a real lesion mask."""
    m = mask.copy()
    rows, cols = np.nonzero(m)
    r, c = int(np.median(rows)), int(np.median(cols))
    m[r - 6 : r + 6, c - 6 : c + 6] = False
    assert coco.mask_has_holes(m)
    return m


def _dev_dataset(dev_data, tmp_path: Path, *, force_rle: bool = False, holes_every: int = 5) -> tuple[Path, dict]:
    """COCO file for all dev cases (file_name relative to the dev folder); every 5th mask gets a hole."""
    root = dev_data[0].image.parents[1]
    images, anns, masks = [], [], {}
    for i, case in enumerate(dev_data, start=1):
        m = case.load_mask()
        if i % holes_every == 0:
            m = _with_hole(m)
        h, w = m.shape
        images.append(coco.image_dict(i, case.image.relative_to(root).as_posix(), w, h))
        cat = 1 + (case.diagnosis or 0)
        anns.append(coco.annotation_dict(100 + i, i, cat, m, force_rle=force_rle, extra={"case": case.id}))
        masks[100 + i] = m
    cats = [(1, "common_naevus"), (2, "atypical_naevus"), (3, "melanoma")]
    path = tmp_path / ("rle.json" if force_rle else "coco.json")
    coco.write_json_atomic(coco.dataset_dict(images, anns, cats), path)
    return path, masks


# ---------------------------------------------------------------------------------------------- RLE


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 25), st.integers(1, 25))))
def test_rle_round_trip_and_counts_decoder_agree_with_pycocotools(mask):
    rle = coco.Rle.from_mask(mask)
    assert np.array_equal(rle.decode(), mask)
    assert rle.area == int(mask.sum())
    runs = coco.decode_counts_string(rle.counts)
    assert sum(runs) == mask.size
    again = mask_utils.frPyObjects({"size": [rle.height, rle.width], "counts": runs}, rle.height, rle.width)
    assert again["counts"].decode() == rle.counts
    # column-major: the first run counts down the first column
    assert np.array_equal(mask_utils.decode(rle._c()).astype(bool), mask)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(2, 20), st.integers(2, 20))))
def test_encode_segmentation_is_exact_for_pycocotools(mask):
    if not mask.any():
        return
    seg, kind = coco.encode_segmentation(mask)
    h, w = mask.shape
    if kind == "polygon":
        assert not coco.mask_has_holes(mask)
        assert all(len(p) >= 6 for p in seg)
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    else:
        assert isinstance(seg["counts"], str)
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


def test_holes_go_to_rle_and_plain_masks_to_polygons():
    ring = _ring()
    assert coco.encode_segmentation(ring)[1] == "rle"
    solid = ring.copy()
    solid[12:20, 18:30] = True
    seg, kind = coco.encode_segmentation(solid)
    assert kind == "polygon"
    assert seg == [[10.0, 5.0, 40.0, 5.0, 40.0, 30.0, 10.0, 30.0]]  # pixel edges, collinear points dropped
    assert coco.encode_segmentation(solid, force_rle=True)[1] == "rle"


def test_annotation_dict_fields():
    m = _ring()
    ann = coco.annotation_dict(7, 3, 2, m, extra={"metrics": {"area_mm2": 1.5}})
    assert ann["iscrowd"] == 0  # also for RLE: iscrowd=1 would make COCOeval ignore the lesion
    assert ann["area"] == int(m.sum())
    assert ann["bbox"] == [10, 5, 30, 25]
    assert ann["dermaseg"] == {"encoding": "rle", "metrics": {"area_mm2": 1.5}}
    with pytest.raises(CocoError, match="annotation id 8: the mask is empty"):
        coco.annotation_dict(8, 3, 2, np.zeros((4, 4), bool))


def test_png_mask_is_0_255_same_size(tmp_path):
    m = _ring()
    coco.write_png_mask(m, tmp_path / "a" / "m.png")
    img = Image.open(tmp_path / "a" / "m.png")
    assert img.mode == "L" and img.size == (50, 40)
    arr = np.asarray(img)
    assert set(np.unique(arr)) == {0, 255}
    assert np.array_equal(arr == 255, m)


# ------------------------------------------------------------------------------ real consumers


def test_pycocotools_reads_dev_export_exactly(dev_data, tmp_path):
    path, masks = _dev_dataset(dev_data, tmp_path)
    data = json.loads(path.read_text())
    kinds = [a["dermaseg"]["encoding"] for a in data["annotations"]]
    assert kinds.count("rle") == len(dev_data) // 5 and kinds.count("polygon") == len(kinds) - kinds.count("rle")
    gt = _quiet(COCO, str(path))
    for ann_id, m in masks.items():
        ann = gt.anns[ann_id]
        assert np.array_equal(gt.annToMask(ann).astype(bool), m), ann_id
        assert ann["area"] == int(m.sum())
        assert list(mask_utils.toBbox(gt.annToRLE(ann))) == ann["bbox"]


def _eval_segm(gt: COCO, results: list[dict]) -> float:
    dt = _quiet(gt.loadRes, copy.deepcopy(results))  # loadRes writes area/bbox/id into the dicts
    ev = COCOeval(gt, dt, iouType="segm")
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    return float(ev.stats[0])


def test_cocoeval_scores_our_export_against_itself_as_1(dev_data, tmp_path):
    path, _ = _dev_dataset(dev_data, tmp_path)
    gt = _quiet(COCO, str(path))
    results = []
    for ann in gt.dataset["annotations"]:
        rle = gt.annToRLE(ann)  # counts: bytes when made from polygons, our str for RLE
        counts = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "segmentation": {"size": rle["size"], "counts": counts},
                "score": 1.0,
            }
        )
    assert _eval_segm(gt, results) == pytest.approx(1.0)
    # A real check, not a tautology: shifting every mask by 40 px lowers AP.
    shifted = []
    for r in results:
        m = np.roll(mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()}), 40, 1)
        shifted.append({**r, "segmentation": coco.Rle.from_mask(m).to_coco()})
    assert _eval_segm(gt, shifted) < 0.9


def test_iscrowd_1_would_hide_lesions_from_cocoeval(tmp_path):
    """Why RLE is written with iscrowd=0: COCOeval treats iscrowd=1 ground truth as 'ignore'."""
    m = _ring()
    for iscrowd, expected in ((0, 1.0), (1, -1.0)):
        ann = coco.annotation_dict(1, 1, 1, m)
        ann["iscrowd"] = iscrowd
        data = coco.dataset_dict([coco.image_dict(1, "a.png", 50, 40)], [ann], [(1, "lesion")])
        path = tmp_path / f"crowd{iscrowd}.json"
        coco.write_json_atomic(data, path)
        gt = _quiet(COCO, str(path))
        res = [{"image_id": 1, "category_id": 1, "segmentation": ann["segmentation"], "score": 1.0}]
        assert _eval_segm(gt, res) == pytest.approx(expected)


def _supervision_masks(images_dir: Path, path: Path) -> dict[str, np.ndarray]:
    sv = pytest.importorskip("supervision")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "OpenCV is not installed; using the NumPy fallback"
        ds = sv.DetectionDataset.from_coco(
            images_directory_path=str(images_dir), annotations_path=str(path), force_masks=True
        )
    return {Path(p).name: det.mask for p, det in ds.annotations.items()}


def test_supervision_loads_identical_rle_masks(dev_data, tmp_path):
    path, masks = _dev_dataset(dev_data, tmp_path, force_rle=True)
    loaded = _supervision_masks(dev_data[0].image.parents[1], path)
    assert len(loaded) == len(dev_data)
    for i, case in enumerate(dev_data, start=1):
        got = loaded[case.image.name]
        assert got.shape == (1, *masks[100 + i].shape)
        assert np.array_equal(got[0], masks[100 + i]), case.id


def test_supervision_polygons_differ_only_by_its_boundary_convention(dev_data, tmp_path):
    """supervision rasterises polygons with cv2.fillPoly semantics (vertices at pixel centres,
    boundary included), pycocotools with pixel-edge semantics: for our exact pixel-edge polygons it
    adds at most a one-pixel rim on the right/bottom. RLE masks (holes) are identical."""
    path, masks = _dev_dataset(dev_data, tmp_path)
    loaded = _supervision_masks(dev_data[0].image.parents[1], path)
    for i, case in enumerate(dev_data, start=1):
        ours, theirs = masks[100 + i], loaded[case.image.name][0]
        if i % 5 == 0:
            assert np.array_equal(theirs, ours), case.id
            continue
        assert not (ours & ~theirs).any(), case.id  # nothing of ours is lost
        grown = ours.copy()
        grown[1:, :] |= ours[:-1, :]
        grown[:, 1:] |= grown[:, :-1]
        assert not (theirs & ~grown).any(), case.id  # extra pixels only one step right/down
        assert (theirs.sum() - ours.sum()) / ours.sum() < 0.03


# ---------------------------------------------------------------------------------------- import


def _doc(**over) -> dict:
    ann = {
        "id": 17,
        "image_id": 1,
        "category_id": 1,
        "segmentation": [[2, 2, 8, 2, 8, 6, 2, 6]],
        "iscrowd": 0,
    }
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 8}],
        "categories": [{"id": 1, "name": "lesion"}],
        "annotations": [ann],
    }
    for k, v in over.items():
        if k.startswith("ann_"):
            key = k[4:]
            if v is ...:
                del ann[key]
            else:
                ann[key] = v
        else:
            doc[k] = v
    return doc


def test_import_polygons_and_all_rle_forms():
    m = np.zeros((8, 10), bool)
    m[2:6, 2:8] = True
    ds = coco.parse_coco(_doc())
    (a,) = ds.annotations
    assert a.kind == "polygon" and np.array_equal(a.rle.decode(), m)
    compressed = coco.Rle.from_mask(m).to_coco()
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    runs = coco.decode_counts_string(r["counts"].decode())
    for seg in (compressed, {"size": [8, 10], "counts": runs}):
        (b,) = coco.parse_coco(_doc(ann_segmentation=seg)).annotations
        assert b.kind == "rle" and np.array_equal(b.rle.decode(), m)
    # a degenerate part (2 points) next to a real one is dropped, not a reason to refuse the file
    (c,) = coco.parse_coco(_doc(ann_segmentation=[[1, 1, 3, 3], [2, 2, 8, 2, 8, 6, 2, 6]])).annotations
    assert np.array_equal(c.rle.decode(), m)


BAD = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"images": [], "annotations": []}', "missing key 'categories'"),
    (b'{"images": [], "categories": [], "annotations": [], "x": NaN}', "NaN"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": "\xc3\x28"}', "UTF-8"),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_unreadable_files_are_refused(raw, message):
    with pytest.raises(CocoError, match=message):
        coco.read_coco(raw)


INVALID = [
    (_doc(ann_image_id=5), "annotation id 17: image_id 5 is not among"),
    (_doc(ann_category_id=9), "annotation id 17: category_id 9 is not among"),
    (
        _doc(ann_segmentation=[[2, 2, 80, 2, 8, 6, 2, 6]]),
        r"annotation id 17: polygon 0 has point \(80, 2\) outside",
    ),
    (_doc(ann_segmentation=[[2, 2, 8, 2, 8, 6, -1, 6]]), "annotation id 17: .*outside"),
    (_doc(ann_segmentation=[[2, 2, 8, 2, 8, 6, 2]]), "annotation id 17: polygon 0 has an odd count"),
    (_doc(ann_segmentation=[[2, 2, 8, 2, 8, 1e999, 2, 6]]), "annotation id 17: polygon 0 .*finite"),
    (_doc(ann_segmentation=[[2, 2, 8, "2", 8, 6]]), "annotation id 17: polygon 0 .*finite"),
    (_doc(ann_segmentation=[[1, 1, 3, 3]]), "annotation id 17: .*no polygon with 3 or more points"),
    (_doc(ann_segmentation=[[[2, 2, 8, 2, 8, 6]]]), "annotation id 17: polygon 0 holds something"),
    (_doc(ann_segmentation="abc"), "annotation id 17: 'segmentation' must be"),
    (_doc(ann_segmentation={"size": [8, 10]}), "annotation id 17: an RLE segmentation needs"),
    (
        _doc(ann_segmentation={"size": [10, 8], "counts": [80]}),
        "annotation id 17: RLE size .* does not match",
    ),
    (
        _doc(ann_segmentation={"size": [8, 10], "counts": [79]}),
        "annotation id 17: RLE run lengths add up to 79",
    ),
    (_doc(ann_segmentation={"size": [8, 10], "counts": [90, -10]}), "annotation id 17: RLE has a negative"),
    (_doc(ann_segmentation={"size": [8, 10], "counts": "\x7f\x7f"}), "annotation id 17: bad compressed RLE"),
    (_doc(ann_segmentation={"size": [8, 10], "counts": "o"}), "annotation id 17: bad compressed RLE"),
    (
        _doc(ann_segmentation={"size": [8, 10], "counts": "o" * 40 + "1"}),
        "annotation id 17: bad compressed RLE",
    ),
    (
        _doc(ann_segmentation={"size": [8, 10], "counts": [80]}),
        "annotation id 17: the segmentation covers no",
    ),
    (_doc(ann_segmentation=...), "annotation id 17: missing key 'segmentation'"),
    (_doc(ann_iscrowd=2), "annotation id 17: 'iscrowd' must be 0 or 1"),
    (_doc(ann_id=10**30), "annotation #0: 'id' must be a whole number"),
    (_doc(ann_id=True), "annotation #0: 'id' must be a whole number"),
    (_doc(images=[{"id": 1, "file_name": "a.png", "width": 10**12, "height": 8}]), "image id 1: 'width'"),
    (_doc(images=[{"id": 1, "file_name": "a.png", "width": 10}]), "image id 1: missing key 'height'"),
    (_doc(images=[{"id": 1, "file_name": "", "width": 10, "height": 8}]), "image id 1: 'file_name'"),
    (
        _doc(images=[{"id": 1, "file_name": "a.png", "width": 10, "height": 8}] * 2),
        "image id 1: appears more",
    ),
    (_doc(categories=[{"id": 1}]), "category id 1: missing key 'name'"),
    (_doc(annotations={"id": 1}), "'annotations' must be a list"),
]


@pytest.mark.parametrize(("doc", "message"), INVALID)
def test_invalid_entries_are_named(doc, message):
    with pytest.raises(CocoError, match=message):
        coco.parse_coco(doc)
    # the same through the bytes path (JSON encoding of 1e999 is written by hand)
    raw = json.dumps(doc).replace("Infinity", "1e999").encode()
    with pytest.raises(CocoError, match=message):
        coco.read_coco(raw)


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(CocoError, match="file not found"):
        coco.read_coco(tmp_path / "nope.json")
    with pytest.raises(CocoError, match="is a folder"):
        coco.read_coco(tmp_path)


def test_export_then_parse_round_trip(dev_data, tmp_path):
    path, masks = _dev_dataset(dev_data[:10], tmp_path)
    ds = coco.read_coco(path)
    assert len(ds.images) == 10 and len(ds.annotations) == 10
    for a in ds.annotations:
        assert np.array_equal(a.rle.decode(), masks[a.id])
        assert a.iscrowd == 0 and a.extra["case"]
