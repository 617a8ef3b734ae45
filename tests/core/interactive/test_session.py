"""`InteractiveSession`, the product's prompt path: the same masks as before the click path was rebuilt
around it (`click_session` / `interactive_predict`, ClickSession, RefineSession; commit dd4b931), on real
dev images with the built default variant on ONNX Runtime (CPU).

The old code's masks themselves are stored in data/session_reference.npz (bit-packed, one per distinct
mask, named by its hash in RECORDED): per image, a box, a click alone, two clicks, a box and a click, a box
and two clicks (the clicks the evaluation's simulator gave against the expert mask), each through the
product path at image resolution (`auto`), on a half-size grid (`auto_grid`), with the best head for a box
alone (`auto_best`), and through each click method alone, untidied (`translate`, `refine`). They were made
by dd4b931's code on this machine's artifacts and ONNX Runtime, and each hashes to its name in RECORDED,
the hashes an earlier version of this test compared bit for bit.

Not bit for bit any more: CI rebuilds the model artifacts and may run another ONNX Runtime release or
CPU instruction set, whose float arithmetic differs by ~1e-6 and can flip a pixel whose logit sits at the
threshold. So a new mask may differ from the old one in at most `MAX_DIFF_FRACTION` of the old mask's area
(the lesion's, at least one pixel) with IoU >= `MIN_IOU`; on the machine the masks were recorded on they
are equal (0 differing pixels, printed per mask). Measured on these prompts: relative noise of 1e-5 and
1e-4 on every ONNX output (encoder, decoders) flipped at most 1 pixel per mask, while real changes of the
method failed the test: `EDIT_BEYOND` 0.5 -> 0.75 moved 20-1564 pixels (on all three images), tidying
without filling holes 35-184 (on ISIC_0027533). Re-record the masks only from code known to give the old ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dermaseg.core.image import load_image
from dermaseg.core.interactive.prefix_cache import PrefixCache
from dermaseg.core.interactive.refine import Refinement
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.interactive.translate import Translation
from dermaseg.core.segment.prompts import Prompts

REFERENCE = Path(__file__).parent / "data" / "session_reference.npz"
# How far a mask may be from the old code's: a few pixels at the threshold that float noise can flip
MAX_DIFF_FRACTION = 0.0005  # of the reference mask's area (px)
MIN_IOU = 0.999

PROMPTS = {
    "IMD008": {
        "box": Prompts((254.0, 131.0, 561.0, 414.0), (), ()),
        "click": Prompts(None, ((384.0, 279.0),), (1,)),
        "clicks2": Prompts(None, ((384.0, 279.0), (530.0, 218.0)), (1, 1)),
        "box_click": Prompts((254.0, 131.0, 561.0, 414.0), ((309.0, 196.0),), (0,)),
        "box_clicks2": Prompts((254.0, 131.0, 561.0, 414.0), ((309.0, 196.0), (532.0, 216.0)), (0, 1)),
    },
    "IMD256": {
        "box": Prompts((144.0, 28.0, 515.0, 453.0), (), ()),
        "click": Prompts(None, ((359.0, 239.0),), (1,)),
        "clicks2": Prompts(None, ((359.0, 239.0), (426.0, 42.0)), (1, 1)),
        "box_click": Prompts((144.0, 28.0, 515.0, 453.0), ((246.0, 335.0),), (0,)),
        "box_clicks2": Prompts((144.0, 28.0, 515.0, 453.0), ((246.0, 335.0), (173.0, 338.0)), (0, 1)),
    },
    "ISIC_0027533": {
        "box": Prompts((160.0, 122.0, 489.0, 373.0), (), ()),
        "click": Prompts(None, ((335.0, 253.0),), (1,)),
        "clicks2": Prompts(None, ((335.0, 253.0), (343.0, 325.0)), (1, 1)),
        "box_click": Prompts((160.0, 122.0, 489.0, 373.0), ((184.0, 275.0),), (0,)),
        "box_clicks2": Prompts((160.0, 122.0, 489.0, 373.0), ((184.0, 275.0), (396.0, 336.0)), (0, 1)),
    },
}

RECORDED = {
    "IMD008": {
        "box": {
            "auto": "aad312a36442676c",
            "auto_grid": "11ca9214136eeda1",
            "auto_best": "aad312a36442676c",
            "translate": "edc4fa0c91209712",
            "refine": "aad312a36442676c",
        },
        "click": {
            "auto": "57aa41a5c09da5ed",
            "auto_grid": "777bbcb659ff167a",
            "auto_best": "57aa41a5c09da5ed",
            "translate": "e90b665dd49983e6",
            "refine": "57aa41a5c09da5ed",
        },
        "clicks2": {
            "auto": "5ef8470704956ff6",
            "auto_grid": "bce4465cb7420e15",
            "auto_best": "5ef8470704956ff6",
            "translate": "e90b665dd49983e6",
            "refine": "8a0abf23e068246f",
        },
        "box_click": {
            "auto": "c0fc17a7950d46d9",
            "auto_grid": "d091191c93c68f63",
            "auto_best": "c0fc17a7950d46d9",
            "translate": "e371bf1c9622f85d",
            "refine": "c0fc17a7950d46d9",
        },
        "box_clicks2": {
            "auto": "791627f4ca94dfba",
            "auto_grid": "5d297d9d79252519",
            "auto_best": "791627f4ca94dfba",
            "translate": "4898ebf3b14690d8",
            "refine": "791627f4ca94dfba",
        },
    },
    "IMD256": {
        "box": {
            "auto": "5350a452c1641abc",
            "auto_grid": "84a4f94fcf9e11a8",
            "auto_best": "5350a452c1641abc",
            "translate": "6a898b149ccc0067",
            "refine": "5350a452c1641abc",
        },
        "click": {
            "auto": "b8816ebbde0686df",
            "auto_grid": "7fa3737ceb0347f6",
            "auto_best": "b8816ebbde0686df",
            "translate": "b65fc99b8a3f65a3",
            "refine": "8039251b844b44c0",
        },
        "clicks2": {
            "auto": "a1797caf9a7c2737",
            "auto_grid": "90783d367c75f088",
            "auto_best": "a1797caf9a7c2737",
            "translate": "9085a74b369d1309",
            "refine": "860f2f8407cd2f5c",
        },
        "box_click": {
            "auto": "baa4e33e35cd337f",
            "auto_grid": "d2d3eb02a81c02bd",
            "auto_best": "baa4e33e35cd337f",
            "translate": "384412745914fa75",
            "refine": "f1ff041f09e16099",
        },
        "box_clicks2": {
            "auto": "dc3d3309d62b3314",
            "auto_grid": "c488c999d4c56f56",
            "auto_best": "dc3d3309d62b3314",
            "translate": "35e51d35e97d17eb",
            "refine": "280754318661b3c6",
        },
    },
    "ISIC_0027533": {
        "box": {
            "auto": "ddb09a1acd1faa19",
            "auto_grid": "0f8468e4124628ac",
            "auto_best": "ddb09a1acd1faa19",
            "translate": "2b98233dc4ec1d3e",
            "refine": "9bc30527d133b16b",
        },
        "click": {
            "auto": "1a706e3b3a5a9d08",
            "auto_grid": "c7c3192a9486c3f1",
            "auto_best": "1a706e3b3a5a9d08",
            "translate": "261e3c1735058bd3",
            "refine": "6280947cc1d32999",
        },
        "clicks2": {
            "auto": "6b0297bc80a83d9c",
            "auto_grid": "e707c2648b8ffc47",
            "auto_best": "6b0297bc80a83d9c",
            "translate": "261e3c1735058bd3",
            "refine": "de2daac52c854248",
        },
        "box_click": {
            "auto": "d39cd7280e8ef95b",
            "auto_grid": "85dc59f75b61d1e5",
            "auto_best": "d39cd7280e8ef95b",
            "translate": "b4585ba4ed4b47e8",
            "refine": "00d79ad5f27a141e",
        },
        "box_clicks2": {
            "auto": "959d730e8873edd6",
            "auto_grid": "3f569929bde94e27",
            "auto_best": "959d730e8873edd6",
            "translate": "b4585ba4ed4b47e8",
            "refine": "8f5e4ec925ba7eaa",
        },
    },
}


def _hash(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The old code's masks by their hash in RECORDED: bool (H, W) at the image's or the grid's size."""
    with np.load(REFERENCE) as data:  # per mask: its bits, packed, and its shape as "<hash>_shape"
        shapes = {name.removesuffix("_shape"): tuple(data[name]) for name in data.files if name.endswith("_shape")}
        masks = {
            name: np.unpackbits(data[name], count=int(np.prod(shape))).reshape(shape).astype(bool)
            for name, shape in shapes.items()
        }
    assert {_hash(mask) for mask in masks.values()} == set(masks)  # the file holds what was recorded
    return masks


def _differing(mask: np.ndarray, old: np.ndarray) -> int:
    """Pixels where `mask` and the old mask (same shape) differ, or -1 when their shapes differ."""
    return int(np.count_nonzero(mask != old)) if mask.shape == old.shape else -1


def _close(mask: np.ndarray, old: np.ndarray) -> bool:
    """Whether `mask` is the old mask up to the pixels float noise can flip (module docstring)."""
    differing = _differing(mask, old)
    if differing < 0:
        return False
    union = int(np.count_nonzero(mask | old))
    iou = 1.0 if union == 0 else 1.0 - differing / union
    return differing <= max(1.0, MAX_DIFF_FRACTION * int(old.sum())) and iou >= MIN_IOU


@pytest.mark.parametrize("case_id", list(RECORDED))
def test_the_session_gives_the_masks_recorded_before(float_engine, dev_data, reference, case_id) -> None:
    """On the float tuned decoder the masks were made with: this test guards the prompt path's code; the
    int8 decoder the product runs by default (issue 18) is held to the float one by the accuracy gate
    (docs/speed.md) and `tests/models/test_onnx_parity.py`."""
    case = next(c for c in dev_data if c.id == case_id)
    seg = float_engine.segmenter()
    seg.set_image(load_image(case.image))
    assert seg.image is not None
    grid = (seg.image.height // 2, seg.image.width // 2)
    auto = InteractiveSession(seg)  # one session for every prompt sequence, as the page keeps one per tab
    translate, refine = InteractiveSession(seg, "translate").method, InteractiveSession(seg, "refine").method
    assert isinstance(translate, Translation) and isinstance(refine, Refinement)
    got = {
        name: {
            "auto": auto.predict(prompts).mask,
            "auto_grid": auto.predict(prompts, grid).mask,
            "auto_best": auto.predict(prompts, head="best").mask,
            "translate": translate.predict(prompts).mask,
            "refine": refine.predict(prompts).mask,
        }
        for name, prompts in PROMPTS[case_id].items()
    }
    old = {name: {path: reference[h] for path, h in paths.items()} for name, paths in RECORDED[case_id].items()}
    differing = {
        name: {path: _differing(got[name][path], old[name][path]) for path in paths} for name, paths in old.items()
    }
    print(f"{case_id}: pixels differing from the old masks {differing}")
    far = {
        f"{name}/{path}": n
        for name, paths in old.items()
        for path, n in differing[name].items()
        if not _close(got[name][path], old[name][path])
    }
    assert not far, f"{case_id}: masks farther from the old code's than float noise explains (pixels differing): {far}"


def test_a_new_session_answers_as_one_that_has_seen_other_prompts(float_engine, dev_data, reference) -> None:
    """The prefix cache changes the cost, never the answer: a fresh session per prompt gives the same."""
    case = next(c for c in dev_data if c.id == "IMD008")
    seg = float_engine.segmenter()
    seg.set_image(load_image(case.image))
    used = InteractiveSession(seg)
    for prompts in PROMPTS["IMD008"].values():  # the prefixes and other prompts, kept in its cache
        used.predict(prompts)
    prompts = PROMPTS["IMD008"]["box_clicks2"]
    fresh = InteractiveSession(seg).predict(prompts).mask
    assert np.array_equal(fresh, used.predict(prompts).mask)  # same process, same arithmetic: bit for bit
    assert _close(fresh, reference[RECORDED["IMD008"]["box_clicks2"]["auto"]])


def test_the_prefix_cache_keeps_one_image_at_a_time() -> None:
    cache, made = PrefixCache(), []

    def make(value: int) -> int:
        made.append(value)
        return value

    assert cache.get("a", "x", lambda: make(1)) == 1
    assert cache.get("a", "x", lambda: make(2)) == 1  # kept
    # `make` may ask for another key of the same image (a prefix's answer)
    assert cache.get("a", "y", lambda: cache.get("a", "z", lambda: make(3)) + 1) == 4
    assert cache.get("a", "z", lambda: make(5)) == 3
    assert cache.get("b", "x", lambda: make(6)) == 6  # another image: what was kept for "a" is dropped
    assert cache.get("a", "x", lambda: make(7)) == 7
    assert made == [1, 3, 6, 7]


def test_an_unknown_click_method_is_refused(engine) -> None:
    with pytest.raises(ValueError, match="unknown click method"):
        InteractiveSession(engine.segmenter(), "points")  # type: ignore[arg-type]
