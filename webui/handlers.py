"""What the page does, as plain functions over one browser session's state (no Gradio here).

Every function takes a `Session`, changes it, and returns plain data (dicts, strings, paths) that the
app hands to Gradio components. Errors a user can cause are `DermasegError`s with a message for the
page; the app shows them and keeps running. Coordinates are image pixels (x, y), as in `core`.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermaseg.core import coco
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import DermasegError, GeometryError
from dermaseg.core.geometry import Polygons, mask_to_polygons, polygons_to_mask, repair_polygons
from dermaseg.core.image import LesionImage, load_image
from dermaseg.core.interactive import ClickMethod, click_session, interactive_predict
from dermaseg.core.metrics import DECISION_AID_NOTICE, LesionMetrics, measure
from dermaseg.core.preprocess import Transform
from dermaseg.core.prompts import Prompts
from dermaseg.core.segmenter import Engine, MaskResult, Segmenter
from dermaseg.core.store import Project, Provenance
from dermaseg.webui.gesture_route import MAX_DEPTH, nesting_depth

DISPLAY_MAX_SIDE = 2048  # px; larger images are shown downscaled (prompts stay in full-res pixels)
DEFAULT_TOLERANCE_PX = 1.0
STATUS_ICONS = {"not_started": "○", "in_progress": "◐", "done": "●"}
STATUS_WORDS = {"not_started": "not started", "in_progress": "in progress", "done": "done"}
UPLOADS_DIR = "uploads"
PREFETCH_AHEAD = 2
# Bounds of one session's memory. An edited outline costs ~140 bytes per vertex in the undo history (30 edits
# of 100,000 vertices added 415 MiB before these bounds); the page's outline of a 44 MP image (dev masks
# upscaled 10x) had at most 1,650 vertices simplified at 1 px, 9,500 at 0 px. The history keeps at most
# MAX_UNDO steps before the current one and MAX_HISTORY_VERTICES edited vertices in all (~70 MB); the
# oldest steps are dropped first.
MAX_UNDO = 100
MAX_EDIT_VERTICES = 20_000
MAX_HISTORY_VERTICES = 500_000


@dataclass(frozen=True)
class Step:
    """One undoable state: the prompts, and the outline edited by hand (None: the model's mask for them).

    mask: the exact mask of a saved annotation (else the outline is rasterised when the step is restored).
    """

    prompts: Prompts
    outline: Polygons | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Session:
    """One browser tab: its segmenter, the open image and everything drawn on it.

    history: undoable states (prompts and outline edits), the last one current (starts with no prompts);
    redo: undone states.
    mask: the current lesion mask, bool (H, W), from the model or rasterised from edited polygons.
    polygons: the editable outline shown on the page (simplified with `tolerance_px`).
    lock: held by every page event on this session (`app.bound`): one tab's events run one at a time,
    different tabs in parallel. Re-entrant, so a handler may call another that takes it.
    channel: an unguessable token naming this session to the canvas's fast path (`gesture_route`).
    """

    segmenter: Segmenter
    project: Project
    views_dir: Path
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    image: LesionImage | None = None
    image_id: int | None = None
    history: list[Step] = field(default_factory=lambda: [Step(Prompts())])
    redo: list[Step] = field(default_factory=list)
    head: int | str = 0
    result: MaskResult | None = None
    mask: np.ndarray | None = None
    polygons: Polygons | None = None
    edited: bool = False
    tolerance_px: float = DEFAULT_TOLERANCE_PX
    ruler: tuple[tuple[float, float], ...] = ()
    heatmap: bool = False
    metrics: LesionMetrics | None = None
    annotation_id: int | None = None
    ack: int = 0  # sequence number of the last gesture handled, echoed to the page for timing
    message: str = ""
    channel: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    clicks: ClickMethod = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.clicks = click_session(self.segmenter)

    @property
    def prompts(self) -> Prompts:
        return self.history[-1].prompts

    def __deepcopy__(self, memo: dict) -> Session:
        # Gradio deep-copies a new session's state; ours holds live resources (ONNX sessions, SQLite),
        # and every session is created fresh by the app's factory, so the copy is the object itself.
        return self

    def mask_shape(self) -> tuple[int, int]:
        image = self.require_image()
        return image.height, image.width

    def require_image(self) -> LesionImage:
        if self.image is None:
            raise DermasegError("open an image first (choose one from the project list or upload one)")
        return self.image


# --------------------------------------------------------------------------------------------------
# opening images


def gallery_choices(project: Project) -> list[tuple[str, int]]:
    """(label, image id) for every project image, label = status icon + path."""
    return [(f"{STATUS_ICONS.get(r.status, '?')} {r.path}", r.id) for r in project.images()]


def progress_summary(project: Project) -> str:
    s = project.summary()["by_status"]
    total = sum(s.values())
    return f"{s['done']} of {total} done · {s['in_progress']} in progress · {s['not_started']} not started"


def neighbour_id(project: Project, image_id: int | None, step: int) -> int | None:
    """The image `step` places after (or before) `image_id` in the project list, wrapping around."""
    ids = [r.id for r in project.images()]
    if not ids:
        return None
    if image_id not in ids:
        return ids[0]
    return ids[(ids.index(image_id) + step) % len(ids)]


def needs_encoding(engine: Engine, image: LesionImage) -> bool:
    """True when the embedding is in no cache: opening the image will run the encoder (~0.4 s)."""
    return not engine.cache.contains(engine.key(image))


def open_project_image(s: Session, image_id: int) -> str:
    """Make a project image current; its saved annotation (if any) becomes the editable outline."""
    image = s.project.load_image(image_id)
    source = s.segmenter.set_image(image)
    s.clicks.prepare()
    _reset(s, image, image_id)
    saved = s.project.annotations(image_id)
    if saved:
        ann = saved[-1]
        s.annotation_id = ann.id
        s.mask = ann.mask()
        s.polygons = Polygons.from_json(ann.polygons) if ann.polygons else mask_to_polygons(s.mask, s.tolerance_px)
        s.edited = True
        s.history = [Step(Prompts(), s.polygons, s.mask)]  # undo comes back to the saved annotation
        _remeasure(s)
    s.message = f"{image.name}: {image.width}×{image.height} px, embedding from {source}"
    if saved:
        s.message += f"; showing the saved annotation ({len(saved)} in total)"
    return s.message


def add_upload(project: Project, data: bytes, name: str, max_pixels: int) -> int:
    """Validate an uploaded file, copy it into the project's `uploads/` folder, return its image id."""
    image = load_image(data, name=name, max_pixels=max_pixels)  # raises ImageLoadError on a bad file
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "image.png"
    rel = f"{UPLOADS_DIR}/{image.sha256[:8]}-{safe}"
    target = project.root / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda tmp: tmp.write_bytes(data))
    rec = project.image_by_path(rel)
    if rec is None:
        project.scan()
        rec = project.image_by_path(rel)
    if rec is None:
        raise DermasegError(f"{name}: could not be added to the project")
    return rec.id


def _reset(s: Session, image: LesionImage, image_id: int | None) -> None:
    s.image, s.image_id = image, image_id
    s.history, s.redo = [Step(Prompts())], []
    s.result = s.mask = s.polygons = s.metrics = None
    s.edited = False
    s.ruler = ()
    s.annotation_id = None


class Prefetcher:
    """Encodes the next images of a project in one background thread, so moving on feels instant."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dermaseg-prefetch")
        self._queued: set[int] = set()
        self._lock = threading.Lock()

    def schedule(self, project: Project, image_id: int, ahead: int = PREFETCH_AHEAD) -> list[int]:
        """Queue the `ahead` images after `image_id`; returns the ids queued now."""
        ids = [r.id for r in project.images()]
        if image_id not in ids:
            return []
        i = ids.index(image_id)
        todo = [ids[(i + k) % len(ids)] for k in range(1, ahead + 1) if len(ids) > k]
        queued = []
        with self._lock:
            for j in todo:
                if j not in self._queued:
                    self._queued.add(j)
                    queued.append(j)
                    self._pool.submit(self._encode, project, j)
        return queued

    def _encode(self, project: Project, image_id: int) -> None:
        try:
            segmenter = self.engine.segmenter()
            segmenter.set_image(project.load_image(image_id))
            click_session(segmenter).prepare()  # and what the first click will need
        except DermasegError:
            pass  # the user will see the error when opening that image
        finally:
            with self._lock:
                self._queued.discard(image_id)

    def wait(self) -> None:
        """Block until everything queued so far is encoded (for tests)."""
        self._pool.submit(lambda: None).result()


# --------------------------------------------------------------------------------------------------
# prompts


def prompt_box(s: Session, box: Iterable[float]) -> None:
    """Replace the box (x0, y0, x1, y1) and re-segment."""
    s.require_image()
    _push(s, s.prompts.with_box(tuple(float(v) for v in box)))


def prompt_click(s: Session, x: float, y: float, positive: bool) -> None:
    """Add a positive (on the lesion) or negative (not the lesion) click and re-segment."""
    s.require_image()
    _push(s, s.prompts.with_point(float(x), float(y), bool(positive)))


def _push(s: Session, prompts: Prompts) -> None:
    image = s.require_image()
    prompts = prompts.validated(image.width, image.height)  # reject before it enters the history
    _predict(s, prompts)
    _record(s, Step(prompts))


def _record(s: Session, step: Step) -> None:
    """Make `step` the newest undoable state; drop the oldest beyond MAX_UNDO or MAX_HISTORY_VERTICES."""
    s.history.append(step)
    s.redo.clear()
    keep, vertices = 0, 0
    for kept in reversed(s.history):
        vertices += vertex_count(kept.outline) if kept.outline is not None else 0
        if keep > MAX_UNDO or (keep and vertices > MAX_HISTORY_VERTICES):
            break
        keep += 1
    del s.history[:-keep]


def undo_prompt(s: Session) -> None:
    """Undo the last prompt or outline edit."""
    if len(s.history) <= 1:
        raise DermasegError("nothing to undo")
    s.redo.append(s.history.pop())
    _restore(s, s.history[-1])


def redo_prompt(s: Session) -> None:
    """Redo the last undone prompt or outline edit."""
    if not s.redo:
        raise DermasegError("nothing to redo")
    s.history.append(s.redo.pop())
    _restore(s, s.history[-1])


def _restore(s: Session, step: Step) -> None:
    """Make `step` current: the model's mask for its prompts, then its hand-edited outline if any."""
    _predict(s, step.prompts)
    if step.outline is not None and s.image is not None:
        s.polygons = step.outline
        s.mask = step.mask if step.mask is not None else polygons_to_mask(step.outline, *s.mask_shape())
        s.edited, s.metrics = True, None
        s.message = f"outline: {int(s.mask.sum()):,} px (edited by hand)"


def clear_prompts(s: Session) -> None:
    s.require_image()
    s.history, s.redo = [Step(Prompts())], []
    _predict(s, s.prompts)
    s.ruler = ()


def choose_head(s: Session, head: int | str) -> None:
    """Use another decoder head (0-3) or "best"; re-segments with the current prompts."""
    s.head = head if head == "best" else int(head)
    if not s.prompts.is_empty:
        _predict(s, s.prompts)


def _predict(s: Session, prompts: Prompts) -> None:
    if prompts.is_empty:
        s.result = s.mask = s.polygons = s.metrics = None
        s.edited = False
        s.message = "Draw a box around the lesion, or click on it."
        return
    r = interactive_predict(s.segmenter, prompts, s.clicks, s.head)
    s.result, s.mask, s.edited, s.metrics = r, r.mask, False, None
    s.polygons = mask_to_polygons(r.mask, s.tolerance_px) if r.mask.any() else None
    n = int(r.mask.sum())
    s.message = (
        f"mask: {n:,} px, predicted IoU {r.score:.2f} (head {r.head})"
        if n
        else "the model found no lesion for these prompts: draw a box around it"
    )


def candidate_choices(s: Session) -> list[tuple[str, str]]:
    """Radio choices: each decoder head with its predicted IoU (when a result exists), plus best."""
    scores = s.result.head_scores if s.result else ()
    names = ["0 · Med-SAM (default)", "1", "2", "3"]
    out = [(f"{n} · IoU {scores[i]:.2f}" if scores else n, str(i)) for i, n in enumerate(names)]
    return [*out, ("best predicted IoU", "best")]


# --------------------------------------------------------------------------------------------------
# polygons


def edit_polygons(s: Session, data: dict[str, Any]) -> tuple[str, ...]:
    """Take an edited outline from the page: repaired, it becomes the mask. Returns repair warnings."""
    image = s.require_image()
    polys = Polygons.from_json(data)
    if (n := vertex_count(polys)) > MAX_EDIT_VERTICES:
        raise GeometryError(
            f"an edited outline may have at most {MAX_EDIT_VERTICES:,} vertices, this one has {n:,}: "
            "simplify it (a larger tolerance) before editing"
        )
    if (polys.width, polys.height) != (image.width, image.height):
        raise GeometryError(
            f"the outline is for a {polys.width}×{polys.height} image, the open image is "
            f"{image.width}×{image.height}; reload the page"
        )
    repaired = repair_polygons(polys)
    s.polygons = repaired.polygons
    s.mask = polygons_to_mask(repaired.polygons, image.height, image.width)
    s.edited, s.metrics = True, None
    _record(s, Step(s.prompts, repaired.polygons))  # undoable like a prompt
    s.message = f"outline edited: {int(s.mask.sum()):,} px" + (
        f" ({len(repaired.warnings)} repair(s))" if repaired.warnings else ""
    )
    return repaired.warnings


def set_tolerance(s: Session, tolerance_px: float) -> None:
    """Re-derive the editable outline from the current mask with a new simplification tolerance."""
    if not (math.isfinite(tolerance_px) and tolerance_px >= 0):
        raise GeometryError(f"the tolerance must be a number of pixels >= 0, got {tolerance_px!r}")
    s.tolerance_px = float(tolerance_px)
    if s.mask is not None and s.mask.any():
        s.polygons = mask_to_polygons(s.mask, s.tolerance_px)
        if s.edited:  # the edit is baked into the mask; keep mask and outline in agreement
            s.mask = polygons_to_mask(s.polygons, s.mask.shape[0], s.mask.shape[1])
            s.history[-1] = Step(s.prompts, s.polygons)
        s.message = f"outline simplified at {s.tolerance_px:g} px: {vertex_count(s.polygons)} vertices"


def vertex_count(polys: Polygons) -> int:
    """Vertices of every ring of every part."""
    return sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in polys.parts)


# --------------------------------------------------------------------------------------------------
# calibration and measurements


def set_mm_per_px(s: Session, mm_per_px: float) -> Calibration:
    cal = Calibration(float(mm_per_px), "user")
    _apply_calibration(s, cal)
    return cal


def ruler_point(s: Session, x: float, y: float) -> None:
    """Add one end of a ruler segment (a third click starts a new segment)."""
    image = s.require_image()
    x, y = float(x), float(y)
    if not (0 <= x <= image.width and 0 <= y <= image.height):  # NaN and infinities fail too
        raise DermasegError(f"a ruler point must lie on the image (got {x:g}, {y:g})")
    s.ruler = ((x, y),) if len(s.ruler) >= 2 else (*s.ruler, (x, y))
    s.message = (
        f"ruler: {math.dist(*s.ruler):.1f} px between the two points; enter their distance in mm"
        if len(s.ruler) == 2
        else "ruler: click the other end"
    )


def calibrate_from_ruler(s: Session, distance_mm: float) -> Calibration:
    if len(s.ruler) != 2:
        raise DermasegError("choose the Ruler tool and click two points on the ruler first")
    cal = Calibration.from_ruler(s.ruler[0], s.ruler[1], float(distance_mm))
    _apply_calibration(s, cal)
    return cal


def _apply_calibration(s: Session, cal: Calibration) -> None:
    image = s.require_image()
    s.image = image.with_calibration(cal)
    if s.image_id is not None:
        s.project.set_calibration(s.image_id, cal)
    if s.mask is not None and s.mask.any():
        _remeasure(s)
    s.message = f"calibration: {cal.mm_per_px:.5f} mm per pixel ({cal.source})"


def calibration_text(s: Session) -> str:
    cal = s.image.calibration if s.image else None
    if cal is None:
        return "Not calibrated: sizes in pixels only."
    return f"{cal.mm_per_px:.5f} mm/px ({cal.source}); {1 / cal.mm_per_px:.1f} px per mm"


def _remeasure(s: Session) -> LesionMetrics | None:
    image = s.require_image()
    s.metrics = measure(s.mask, image.rgb, image.calibration) if s.mask is not None and s.mask.any() else None
    return s.metrics


def measurements(s: Session) -> LesionMetrics | None:
    """Measurements of the current mask (cached until the mask or calibration changes).

    The measuring itself (~60 ms) runs outside the session's lock, on the mask and image read under it,
    so a prompt sent meanwhile is not held back; when the mask changed meanwhile, the new one is
    measured (the result is always for the mask current when this returns).
    """
    while True:
        with s.lock:
            mask, image = s.mask, s.image
            if s.metrics is not None or image is None or mask is None or not mask.any():
                return s.metrics
        metrics = measure(mask, image.rgb, image.calibration)
        with s.lock:
            if s.mask is mask and s.image is image:  # masks and images are replaced, never changed in place
                s.metrics = metrics
                return metrics


def metrics_rows(m: LesionMetrics) -> list[tuple[str, str]]:
    """(name, value) rows for the measurements panel, mm when calibrated."""

    def size(px: float, mm: float | None, unit: str = "mm") -> str:
        return f"{mm:.2f} {unit} ({px:,.1f} px)" if mm is not None else f"{px:,.1f} px"

    area = f"{m.area_mm2:.2f} mm² ({m.area_px:,} px)" if m.area_mm2 is not None else f"{m.area_px:,} px"
    colours = ", ".join(f"{c.replace('_', ' ')} {100 * dict(m.colour_shares)[c]:.0f}%" for c in m.colours_present)
    return [
        ("Area", area),
        ("Largest diameter (Feret max)", size(m.feret_max_px, m.feret_max_mm)),
        ("Smallest diameter (Feret min)", size(m.feret_min_px, m.feret_min_mm)),
        ("Equivalent diameter", size(m.equivalent_diameter_px, m.equivalent_diameter_mm)),
        ("Perimeter", size(m.perimeter_px, m.perimeter_mm)),
        (
            "Asymmetry index (major / minor axis)",
            f"{m.asymmetry_index_major:.2f} / {m.asymmetry_index_minor:.2f} → {m.asymmetry_score} of 2 axes",
        ),
        ("Border compactness (1 = disc)", f"{m.compactness:.2f}"),
        ("Border fractal dimension", "n/a" if m.fractal_dimension is None else f"{m.fractal_dimension:.2f}"),
        (f"Colours ({m.colour_count})", colours or "none above 3 %"),
        ("Parts", str(m.n_components)),
    ]


def metrics_html(m: LesionMetrics | None) -> str:
    """The measurements panel: a table of decision aids and the notice (never a diagnosis)."""
    if m is None:
        body = "<p class='ds-muted'>No outline yet: draw a box or click on the lesion.</p>"
    else:
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in metrics_rows(m))
        cal = (
            f"calibrated, {m.mm_per_px:.5f} mm/px ({m.calibration_source})"
            if m.mm_per_px
            else "not calibrated: pixels only"
        )
        body = f"<table class='ds-metrics'>{rows}</table><p class='ds-muted'>Scale: {_esc(cal)}.</p>"
    return f"<div class='ds-metrics-panel'>{body}<p class='ds-notice'>{_esc(DECISION_AID_NOTICE)}</p></div>"


def _esc(v: str) -> str:
    return str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------------------
# accept and export


def accept(s: Session, label: str, annotator: str | None = None) -> int:
    """Save the current outline with `label` (committed at once), mark the image done; returns its id.

    annotator: the person's name for the provenance (blank: none recorded).
    """
    image = s.require_image()
    if s.image_id is None:
        raise DermasegError("this image is not in the project; reopen it from the list")
    if s.mask is None or not s.mask.any():
        raise DermasegError("nothing to accept: draw a box or click on the lesion first")
    metrics = measurements(s)
    prov = Provenance(
        source="manual" if s.edited else "model",
        prompts=_prompts_json(s.prompts),
        model_id=s.result.model_id if s.result else None,
        annotator=(annotator or "").strip() or None,
    )
    kw = dict(polygons=s.polygons, metrics=metrics.to_dict() if metrics else None, provenance=prov)
    existing = {a.id for a in s.project.annotations(s.image_id)}
    if s.annotation_id in existing:
        s.project.update_annotation(s.annotation_id, mask=s.mask, label=label, tolerance_px=s.tolerance_px, **kw)
    else:
        ann = s.project.add_annotation(s.image_id, s.mask, label, tolerance_px=s.tolerance_px, **kw)
        s.annotation_id = ann.id
    s.project.set_status(s.image_id, "done")
    s.message = f"saved: {image.name} labelled {label!r} (annotation {s.annotation_id}), marked done"
    return s.annotation_id


def _prompts_json(p: Prompts) -> dict[str, Any]:
    return {"box": list(p.box) if p.box else None, "points": [list(q) for q in p.points], "labels": list(p.labels)}


def export_project(project: Project, out_dir: Path) -> list[Path]:
    """COCO JSON of the whole project and a zip of its PNG masks; raises when nothing is annotated."""
    if not project.annotations():
        raise DermasegError("nothing to export yet: accept at least one annotation")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = _slug(project.root.name)
    masks = out_dir / f"{name}-masks"
    shutil.rmtree(masks, ignore_errors=True)
    report = project.export_coco(out_dir / f"{name}-coco.json", masks_dir=masks)
    archive = shutil.make_archive(str(out_dir / f"{name}-masks"), "zip", masks)
    return [report.coco_path, Path(archive)]


def export_image(s: Session, out_dir: Path) -> list[Path]:
    """COCO JSON of the current image's saved annotations and its PNG mask (union of them)."""
    image = s.require_image()
    anns = s.project.annotations(s.image_id) if s.image_id is not None else []
    if not anns:
        raise DermasegError(f"nothing to export for {image.name}: accept an annotation first")
    rec = s.project.image(s.image_id)
    cats = {name: i + 1 for i, name in enumerate(s.project.labels())}
    union = np.zeros((rec.height, rec.width), dtype=bool)
    coco_anns = []
    for a in anns:
        m = a.mask()
        union |= m
        extra = {"label": a.label, "metrics": a.metrics, "provenance": a.provenance.to_json()}
        coco_anns.append(coco.annotation_dict(a.id, rec.id, cats[a.label], m, extra=extra))
    data = coco.dataset_dict(
        [coco.image_dict(rec.id, rec.path, rec.width, rec.height)],
        coco_anns,
        [(i, n) for n, i in cats.items()],
        {"description": f"dermaseg annotation of {rec.path}"},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _slug(Path(rec.path).stem)
    coco.write_json_atomic(data, out_dir / f"{stem}-coco.json")
    coco.write_png_mask(union, out_dir / f"{stem}-mask.png")
    return [out_dir / f"{stem}-coco.json", out_dir / f"{stem}-mask.png"]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "dermaseg"


# --------------------------------------------------------------------------------------------------
# what the canvas draws


def display_image(image: LesionImage, views_dir: Path) -> Path:
    """A JPEG of the image for the browser (written once per image), at most DISPLAY_MAX_SIDE px."""
    path = views_dir / f"{image.sha256[:24]}.jpg"
    if not path.exists():
        views_dir.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(image.rgb)
        if max(pil.size) > DISPLAY_MAX_SIDE:
            pil.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE), Image.Resampling.LANCZOS)
        write_atomically(path, lambda tmp: pil.save(tmp, "JPEG", quality=90))
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename onto `path`: readers see no file or the whole file, and sessions writing
    the same file at once (same image, same upload) each use a temporary name of their own."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def heatmap_data_url(result: MaskResult, height: int, width: int) -> str:
    """The mask probability (sigmoid of the low-res logits) as a small coloured PNG data URL."""
    h, w = Transform(height, width).resized
    p = 1.0 / (1.0 + np.exp(-np.clip(result.low_res_logits[:h, :w], -30, 30)))
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = np.clip(510 * p, 0, 255)
    rgba[..., 1] = np.clip(255 - 510 * np.abs(p - 0.5), 0, 255)
    rgba[..., 2] = np.clip(255 - 510 * p, 0, 255)
    rgba[..., 3] = (170 * p).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def view(s: Session, url_of: Callable[[Path], str]) -> dict[str, Any]:
    """Everything the canvas draws, as JSON: image URL and size, outline, prompts, ruler, axes."""
    out: dict[str, Any] = {"kind": "view", "ack": s.ack, "message": s.message, "channel": s.channel}
    if s.image is None:
        return out
    img = s.image
    out["image"] = {"src": url_of(display_image(img, s.views_dir)), "width": img.width, "height": img.height}
    out["polygons"] = s.polygons.to_json()["parts"] if s.polygons is not None else []
    p = s.prompts
    out["prompts"] = {"box": list(p.box) if p.box else None, "points": [list(q) for q in p.points]}
    out["prompts"]["labels"] = list(p.labels)
    out["ruler"] = [list(q) for q in s.ruler]
    m = s.metrics
    out["axes"] = (
        {"major": m.major_axis_xy, "minor": m.minor_axis_xy, "feret": m.feret_max_xy, "centroid": m.centroid_xy}
        if m is not None
        else None
    )
    out["heatmap"] = heatmap_data_url(s.result, img.height, img.width) if s.heatmap and s.result else None
    out["edited"] = s.edited
    return out


def view_json(s: Session, url_of: Callable[[Path], str]) -> str:
    return json.dumps(view(s, url_of), separators=(",", ":"), default=_json_default)


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# --------------------------------------------------------------------------------------------------
# gestures from the canvas


def handle_gesture(s: Session, payload: str | dict[str, Any]) -> tuple[str, ...]:
    """Apply one gesture sent by the canvas; returns warnings to show. Unknown gestures raise.

    payload: {"type": "box", "box": [x0, y0, x1, y1]} | {"type": "click", "x", "y", "positive"}
    | {"type": "edit", "polygons": [parts]} | {"type": "ruler", "x", "y"}, each with an optional "seq".
    """
    if isinstance(payload, str) and nesting_depth(payload.encode()) > MAX_DEPTH:  # json.loads would recurse
        raise DermasegError(f"malformed gesture from the page (nested more than {MAX_DEPTH} levels deep)")
    g = json.loads(payload) if isinstance(payload, str) else dict(payload)
    if not isinstance(g, dict) or g.get("kind") != "gesture":
        return ()
    kind = g.get("type")
    try:
        s.ack = int(g.get("seq", s.ack))
        if kind == "box":
            prompt_box(s, g["box"])
        elif kind == "click":
            prompt_click(s, g["x"], g["y"], bool(g.get("positive", True)))
        elif kind == "ruler":
            ruler_point(s, g["x"], g["y"])
        elif kind == "edit":
            image = s.require_image()
            return edit_polygons(s, {"width": image.width, "height": image.height, "parts": g["polygons"]})
        else:
            raise DermasegError(f"unknown gesture {kind!r}")
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise DermasegError(f"malformed gesture from the page ({e.__class__.__name__}: {e})") from None
    return ()
