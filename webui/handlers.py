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
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from dermaseg.core.annotation.geometry import Polygons, mask_to_polygons, polygons_to_mask, repair_polygons
from dermaseg.core.annotation.metrics import DECISION_AID_NOTICE, LesionMetrics, measure
from dermaseg.core.annotation.project.store import Annotation, DamagedAnnotation, Draft, Project, Provenance
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import ConflictError, DermasegError, GeometryError
from dermaseg.core.image import LesionImage, load_image
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.interactive.work_grid import work_shape
from dermaseg.core.segment.preprocess import Transform
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import Engine, MaskResult, Segmenter
from dermaseg.webui.gesture_route import MAX_DEPTH, nesting_depth

DISPLAY_MAX_SIDE = 2048  # px; larger images are shown downscaled (prompts stay in full-res pixels)
DEFAULT_TOLERANCE_PX = 1.0
STATUS_ICONS = {"not_started": "○", "in_progress": "◐", "done": "●"}
STATUS_WORDS = {"not_started": "not started", "in_progress": "in progress", "done": "done"}
UPLOADS_DIR = "uploads"  # an upload is kept as uploads/<first 8 hex of its sha256>/<its file name>
EMBEDDING_SOURCE = {
    "computed": "embedding computed",
    "memory": "embedding from the memory cache",
    "disk": "embedding from the disk cache",
}
PREFETCH_AHEAD = 2
LAST_IMAGE_KEY, ANNOTATOR_KEY = "last_image_id", "annotator"  # `Project.ui_state` keys
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

    mask: the exact mask, when the outline alone does not give it (a saved annotation, at image resolution;
    a painted mask, on the working grid); else the outline is rasterised when the step is restored.
    """

    prompts: Prompts
    outline: Polygons | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Session:
    """One browser tab: its segmenter, the open image and everything drawn on it.

    history: undoable states (prompts and outline edits), the last one current (starts with no prompts);
    redo: undone states.
    mask: the current lesion mask, from the model or rasterised from edited polygons, bool on the working
    grid (`mask_shape()`: the image itself up to `interactive.WORK_MAX_SIDE` px a side, else scaled down to
    it, so that a prompt costs the same on a 12-megapixel photo); `full_mask` gives it at image resolution.
    work_rgb: the image on that grid (for the measurements). full: (mask, the same at image resolution),
    made once when saved.
    polygons: the editable outline shown on the page (simplified with `tolerance_px`), in image pixels.
    annotation_id / annotation_version: the saved lesion being edited and the version it was loaded (or
    saved) at; None while a new lesion is drawn. Every other saved lesion of the image stays as stored.
    pending: ("replace" | "delete", annotation id) waiting for the user's confirmation.
    conflict: the annotation whose save was refused (`ConflictError`), waiting for "Reload" or "Keep both".
    saved_steps / saved_redo: (store action id, annotation id) of this tab's saves and deletes on the
    image, which the page's Undo / Redo take back once the tab's own prompt history is exhausted.
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
    work_rgb: np.ndarray | None = field(default=None, repr=False)
    full: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    calibrate_project: bool = False  # a scale set on the page applies to the whole project (one device)
    annotation_id: int | None = None
    annotation_version: int | None = None
    pending: tuple[str, int] | None = None
    conflict: int | None = None
    saved_steps: list[tuple[int, int]] = field(default_factory=list)
    saved_redo: list[tuple[int, int]] = field(default_factory=list)
    ack: int = 0  # sequence number of the last gesture handled, echoed to the page for timing
    message: str = ""
    channel: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    clicks: InteractiveSession = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.clicks = InteractiveSession(self.segmenter)

    @property
    def prompts(self) -> Prompts:
        return self.history[-1].prompts

    def __deepcopy__(self, memo: dict) -> Session:
        # Gradio deep-copies a new session's state; ours holds live resources (ONNX sessions, SQLite),
        # and every session is created fresh by the app's factory, so the copy is the object itself.
        return self

    def mask_shape(self) -> tuple[int, int]:
        """(h, w) of the working grid `mask` lives on."""
        image = self.require_image()
        return work_shape(image.height, image.width)

    @property
    def pixel_size(self) -> float:
        """Image pixels per working-grid pixel (1.0 up to `interactive.WORK_MAX_SIDE` px a side)."""
        image = self.require_image()
        return image.width / self.mask_shape()[1]

    def require_image(self) -> LesionImage:
        if self.image is None:
            raise DermasegError("open an image first (choose one from the project list or upload one)")
        return self.image


# --------------------------------------------------------------------------------------------------
# opening images


def gallery_choices(project: Project) -> list[tuple[str, int]]:
    """(label, image id) for every project image, label = status icon + path."""
    records = project.images()
    shown = [_shown_path(r.path) for r in records]
    twice = {p for p in shown if shown.count(p) > 1}  # same file name uploaded twice: tell them apart
    return [
        (f"{STATUS_ICONS.get(r.status, '?')} {p}" + (f" · {r.path.split('/')[1]}" if p in twice else ""), r.id)
        for r, p in zip(records, shown, strict=True)
    ]


def _shown_path(path: str) -> str:
    """The path a person recognises: an upload as uploads/<its file name>, without the hash folder."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == UPLOADS_DIR and len(parts[1]) == 8:
        return f"{UPLOADS_DIR}/{parts[2]}"
    return path


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
    """Make a project image current, drawing a new lesion: its saved lesions are shown, none is edited
    until selected (`select_lesion`), so no prompt can replace a saved lesion unasked."""
    image = s.project.load_image(image_id)
    source = s.segmenter.set_image(image)
    s.clicks.prepare()
    _reset(s, image, image_id)
    saved = s.project.annotations(image_id)
    restored = _restore_draft(s, image_id)
    s.message = f"{_shown_path(image.name)}: {image.width}×{image.height} px, {EMBEDDING_SOURCE.get(source, source)}"
    if saved:
        drawing = (
            "your unsaved lesion restored beside them" if restored else "drawing a new one (select one to edit it)"
        )
        s.message += f"; {_count(len(saved), 'saved lesion')} shown, {drawing}"
    if restored:
        s.message += f"; {restored}"
    damaged = damaged_note(s.project.damaged_annotations(image_id))
    if damaged:
        s.message += f"; ⚠ {damaged}"
    s.project.set_ui_state(LAST_IMAGE_KEY, str(image_id))
    return s.message


# --------------------------------------------------------------------------------------------------
# drafts: the work in progress survives a reload, a crash or a kill -9 (kept in the project store)


def keep_draft(s: Session) -> None:
    """Store the open project image's work in progress (prompts, hand-edited outline) as its draft.

    Called after every change of prompts or outline: one small committed UPSERT (the prompts re-run the
    decoder on restore, the outline is rasterised), never the mask. Back at the opening state (nothing
    done since the image opened, or everything undone or cleared) the draft is dropped.
    """
    if s.image_id is None:
        return
    if len(s.history) <= 1:
        s.project.discard_draft(s.image_id)
        return
    step = s.history[-1]
    prompts = {**_prompts_json(step.prompts), "head": s.head, "annotation": [s.annotation_id, s.annotation_version]}
    outline = step.outline.to_json() if step.outline is not None else None
    s.project.save_draft(s.image_id, prompts, outline, s.tolerance_px)


def _restore_draft(s: Session, image_id: int) -> str:
    """Put the image's draft back as the current step (undo returns to the opening state); returns a note."""
    draft = s.project.draft(image_id)
    if draft is None:
        return ""
    image = s.require_image()
    try:
        prompts, outline, head = _draft_step(draft, image.width, image.height)
    except (DermasegError, KeyError, TypeError, ValueError, OverflowError) as e:
        s.project.discard_draft(image_id)
        return f"the unsaved work on this image could not be restored and was dropped ({e})"
    s.head = head
    edited, note = draft.prompts.get("annotation") or [None, None], ""
    if edited[0] is not None:  # the draft edits a saved lesion: edit it again, if nobody changed it since
        ann = next((a for a in lesions(s) if a.id == edited[0]), None)
        if ann is not None and ann.version == edited[1]:
            _load_saved(s, ann)
        else:
            note = f" as a new lesion (annotation {edited[0]} it edited was changed or deleted since)"
    step = Step(prompts, outline)
    s.history.append(step)
    _restore(s, step)
    when = draft.updated_utc.replace("T", " ")[:16]
    return f"restored the work in progress of {when} UTC{note} (not yet accepted)"


def _draft_step(draft: Draft, width: int, height: int) -> tuple[Prompts, Polygons | None, int | str]:
    """(prompts, outline or None, decoder head) of a draft for an image of `width` x `height` px."""
    d = draft.prompts
    box = tuple(float(v) for v in d["box"]) if d.get("box") else None
    points = tuple((float(x), float(y)) for x, y in d.get("points", ()))
    prompts = Prompts(box, points, tuple(int(v) for v in d.get("labels", ())))
    prompts = prompts if prompts.is_empty else prompts.validated(width, height)  # empty: an edited saved outline
    outline = Polygons.from_json(draft.polygons) if draft.polygons is not None else None
    if outline is not None and (outline.width, outline.height) != (width, height):
        raise GeometryError(f"the outline is for a {outline.width}×{outline.height} image")
    head = d.get("head", 0)
    return prompts, outline, head if head == "best" else int(head) if head in (0, 1, 2, 3) else 0


def damaged_note(damaged: list[DamagedAnnotation]) -> str:
    """A sentence naming damaged annotations (left out of the page and exports), or "" when none."""
    if not damaged:
        return ""
    names = "; ".join(d.describe() for d in damaged)
    return (
        f"{len(damaged)} damaged annotation(s) left out ({names}); the rest of the project works: "
        "run `dermaseg project check FOLDER --repair`"
    )


def last_image_id(project: Project) -> int | None:
    """The image the page showed last (kept in the project), if it is still in the project."""
    value = project.ui_state(LAST_IMAGE_KEY)
    ids = {r.id for r in project.images()}
    return int(value) if value is not None and value.isdigit() and int(value) in ids else None


def remember_annotator(project: Project, name: str | None) -> None:
    """Keep the annotator's name in the project, for the next visit of the page."""
    name = (name or "").strip()
    if name != (project.ui_state(ANNOTATOR_KEY) or ""):
        project.set_ui_state(ANNOTATOR_KEY, name)


def remembered_annotator(project: Project) -> str:
    return project.ui_state(ANNOTATOR_KEY) or ""


def add_upload(project: Project, data: bytes, name: str, max_pixels: int) -> int:
    """Validate an uploaded file, copy it into the project's `uploads/` folder, return its image id."""
    image = load_image(data, name=name, max_pixels=max_pixels)  # raises ImageLoadError on a bad file
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "image.png"
    rel = f"{UPLOADS_DIR}/{image.sha256[:8]}/{safe}"  # the folder keeps two files of one name apart
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
    s.work_rgb, s.full = on_grid_rgb(image.rgb, s.mask_shape()), None
    s.history, s.redo = [Step(Prompts())], []
    s.result = s.mask = s.polygons = s.metrics = None
    s.edited = False
    s.ruler = ()
    s.annotation_id = s.annotation_version = s.pending = s.conflict = None
    s.saved_steps, s.saved_redo = [], []


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
            InteractiveSession(segmenter).prepare()  # and what the first click will need
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
    keep_draft(s)


def undo_prompt(s: Session) -> None:
    """Undo the last prompt or outline edit; past them, this tab's last save or delete on the image."""
    if len(s.history) <= 1:
        if s.saved_steps:
            _undo_saved(s)
            return
        raise DermasegError("nothing to undo")
    s.redo.append(s.history.pop())
    _restore(s, s.history[-1])
    keep_draft(s)


def redo_prompt(s: Session) -> None:
    """Redo the last undone prompt or outline edit, else the save or delete undone last."""
    if not s.redo:
        if s.saved_redo:
            _undo_saved(s, redo=True)
            return
        raise DermasegError("nothing to redo")
    s.history.append(s.redo.pop())
    _restore(s, s.history[-1])
    keep_draft(s)


def _restore(s: Session, step: Step) -> None:
    """Make `step` current: the model's mask for its prompts, then its hand-edited outline if any."""
    _predict(s, step.prompts)
    if step.outline is not None and s.image is not None:
        s.polygons = step.outline
        s.mask = on_grid(s, step.mask) if step.mask is not None else rasterised(s, step.outline)
        if step.mask is not None:
            s.full = (s.mask, step.mask)
        s.edited, s.metrics = True, None
        s.message = f"outline: {int(s.mask.sum()):,} px (edited by hand)"


def clear_prompts(s: Session) -> None:
    """Esc: drop the prompts and outline. On a saved lesion, that lesion stays as saved and a new one starts."""
    s.require_image()
    if s.annotation_id is not None:
        new_lesion(s)
        s.ruler = ()
        return
    s.history, s.redo = [Step(Prompts())], []
    _predict(s, s.prompts)
    s.ruler = ()
    keep_draft(s)


def choose_head(s: Session, head: int | str) -> None:
    """Use another decoder head (0-3) or "best"; re-segments with the current prompts."""
    s.head = head if head == "best" else int(head)
    if not s.prompts.is_empty:
        _predict(s, s.prompts)
        keep_draft(s)


def _predict(s: Session, prompts: Prompts) -> None:
    if prompts.is_empty:
        s.result = s.mask = s.polygons = s.metrics = None
        s.edited = False
        s.message = "Draw a box around the lesion, or click on it."
        return
    r = s.clicks.predict(prompts, s.mask_shape(), head=s.head)
    s.result, s.mask, s.edited, s.metrics = r, r.mask, False, None
    s.polygons = outline(s, r.mask) if r.mask.any() else None
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
# the working grid: a prompt's cost depends on it, not on the image's pixels


def on_grid(s: Session, full: np.ndarray) -> np.ndarray:
    """A bool mask at image resolution on the session's working grid (itself when the grid is the image):
    a grid pixel is in when at least half of the image pixels it covers are."""
    h, w = s.mask_shape()
    if full.shape == (h, w):
        return full
    small = Image.fromarray(full.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)
    return np.asarray(small) >= 128


def on_grid_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> the same on a (h, w) grid (area average, as the encoder shrinks); itself when equal."""
    h, w = shape
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BOX))


def outline(s: Session, mask: np.ndarray) -> Polygons:
    """The editable outline of a working-grid mask, in image pixels (simplified at `tolerance_px` grid px)."""
    image = s.require_image()
    return mask_to_polygons(mask, s.tolerance_px).scaled_to(image.width, image.height)


def rasterised(s: Session, polygons: Polygons) -> np.ndarray:
    """An outline in image pixels as a mask on the working grid."""
    h, w = s.mask_shape()
    return polygons_to_mask(polygons.scaled_to(w, h), h, w)


def full_mask(s: Session) -> np.ndarray:
    """The current mask at image resolution, made once per mask (to save it). Where the grid is smaller
    than the image: the model's mask by the same steps at full resolution (the decoder's answers are
    cached, so no model runs: pixel-identical to a session working at full resolution), or the edited
    outline rasterised at full resolution."""
    image = s.require_image()
    if s.mask is None:
        raise DermasegError("nothing to save: draw a box or click on the lesion first")
    if s.mask.shape == (image.height, image.width):
        return s.mask
    if s.full is None or s.full[0] is not s.mask:
        if s.edited or s.result is None:
            assert s.polygons is not None  # every non-empty mask has its outline
            full = polygons_to_mask(s.polygons, image.height, image.width)
        else:
            full = s.clicks.predict(s.prompts, head=s.head).mask
        s.full = (s.mask, full)
    return s.full[1]


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
    s.mask = rasterised(s, repaired.polygons)
    s.edited, s.metrics = True, None
    _record(s, Step(s.prompts, repaired.polygons))  # undoable like a prompt
    s.message = f"outline edited: {int(s.mask.sum() * s.pixel_size**2):,} px" + (
        f" ({len(repaired.warnings)} repair(s))" if repaired.warnings else ""
    )
    return repaired.warnings


MAX_PAINT_POINTS = 10_000  # points in one brush stroke (the canvas keeps them ~radius/2 apart)
MAX_BRUSH_RADIUS_PX = 2_000.0  # image px
MAX_PAINT_WORK_PX = 60_000_000  # pixel tests in one stroke (the sum of its segments' boxes): ~0.5 s


def paint(s: Session, points: Any, radius: float, erase: bool = False) -> None:
    """Paint (or erase) a brush stroke into the current mask; like an outline edit, it is undoable.

    points: the stroke's centre line, [[x, y], ...] in image pixels (1..MAX_PAINT_POINTS points);
    radius: the brush radius in image pixels. A pixel (row r, col c) is painted when its centre
    (c + 0.5, r + 0.5) lies within `radius` of the polyline (discs at the points, capsules between).
    Only the stroke's segments' bounding boxes are touched. The outline is re-derived from the mask.
    """
    image = s.require_image()
    pts = _stroke_points(points)
    try:
        r = float(radius)
    except (TypeError, ValueError):
        r = math.nan
    if not (math.isfinite(r) and 0 < r <= MAX_BRUSH_RADIUS_PX):
        raise GeometryError(
            f"the brush radius must be a number of pixels in (0, {MAX_BRUSH_RADIUS_PX:g}], got {radius!r}"
        )
    h, w = s.mask_shape()  # painted on the working grid, like every mask of the session
    pts, r = pts * (w / image.width, h / image.height), r * w / image.width
    if s.mask is None or not s.mask.any():
        if erase:
            raise DermasegError("nothing to erase: there is no outline yet")
        base = np.zeros((h, w), dtype=bool)
    else:
        base = s.mask
    segments = list(zip(pts[:-1], pts[1:], strict=True)) if len(pts) > 1 else [(pts[0], pts[0])]
    boxes = [_segment_box(a, b, r, w, h) for a, b in segments]
    work = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes)
    if work == 0:
        raise DermasegError("the brush stroke is outside the image")
    if work > MAX_PAINT_WORK_PX:
        raise DermasegError("this brush stroke is too large to paint at once: paint shorter strokes or zoom in")
    mask = base.copy()
    for (a, b), box in zip(segments, boxes, strict=True):
        _stamp_capsule(mask, a, b, r, box, not erase)
    if np.array_equal(mask, base):
        s.message = "the stroke changed nothing" + (" (it erased outside the outline)" if erase else "")
        return
    s.mask = mask
    s.polygons = outline(s, mask) if mask.any() else Polygons((), image.width, image.height)
    s.edited, s.metrics = True, None
    _record(s, Step(s.prompts, s.polygons, mask))  # undoable like a prompt; the exact painted mask
    area = int(mask.sum() * s.pixel_size**2)
    s.message = f"{'erased' if erase else 'painted'}: outline {area:,} px (edited by hand)"


def _stroke_points(points: Any) -> np.ndarray:
    """Validated stroke points: float64 (N, 2) of finite (x, y), 1 <= N <= MAX_PAINT_POINTS."""
    if not isinstance(points, (list, tuple)) or not points:
        raise GeometryError("a brush stroke needs at least one point [x, y]")
    if len(points) > MAX_PAINT_POINTS:
        raise GeometryError(f"a brush stroke has at most {MAX_PAINT_POINTS:,} points, got {len(points):,}")
    try:
        pts = np.array([[float(p[0]), float(p[1])] for p in points if len(p) == 2], dtype=np.float64)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise GeometryError("a brush stroke's points must be [x, y] pairs of numbers") from None
    if len(pts) != len(points) or not np.isfinite(pts).all():
        raise GeometryError("a brush stroke's points must be [x, y] pairs of finite numbers")
    return pts


def _segment_box(a: np.ndarray, b: np.ndarray, r: float, w: int, h: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels whose centres may lie within r of segment ab, clipped to the image."""
    x0 = math.floor(min(max(min(a[0], b[0]) - r, 0.0), w))
    x1 = math.ceil(min(max(max(a[0], b[0]) + r, 0.0), w))
    y0 = math.floor(min(max(min(a[1], b[1]) - r, 0.0), h))
    y1 = math.ceil(min(max(max(a[1], b[1]) + r, 0.0), h))
    return x0, y0, max(x0, x1), max(y0, y1)


def _stamp_capsule(
    mask: np.ndarray, a: np.ndarray, b: np.ndarray, r: float, box: tuple[int, int, int, int], value: bool
) -> None:
    """Set to `value` the pixels of `mask` (bool (H, W), in place) whose centres lie within r of segment ab."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - a[0]
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    inside = (px - t * dx) ** 2 + (py - t * dy) ** 2 <= r * r
    mask[y0:y1, x0:x1][inside] = value


def set_tolerance(s: Session, tolerance_px: float) -> None:
    """Re-derive the editable outline from the current mask with a new simplification tolerance."""
    if not (math.isfinite(tolerance_px) and tolerance_px >= 0):
        raise GeometryError(f"the tolerance must be a number of pixels >= 0, got {tolerance_px!r}")
    s.tolerance_px = float(tolerance_px)
    if s.mask is not None and s.mask.any():
        s.polygons = outline(s, s.mask)
        if s.edited:  # the edit is baked into the mask; keep mask and outline in agreement
            s.mask = rasterised(s, s.polygons)
            s.history[-1] = Step(s.prompts, s.polygons)
            keep_draft(s)
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
    """Use `cal` for the open image, or (`s.calibrate_project`) for every image of the project without a
    scale of its own, this one included (its own scale, if any, is dropped)."""
    image = s.require_image()
    if s.calibrate_project:
        s.project.set_project_calibration(cal)
        if s.image_id is not None:
            s.project.set_calibration(s.image_id, None)
        cal = Calibration(cal.mm_per_px, "project")
    elif s.image_id is not None:
        s.project.set_calibration(s.image_id, cal)
    s.image = image.with_calibration(cal)
    if s.mask is not None and s.mask.any():
        _remeasure(s)
    where = "every image of the project without its own scale" if s.calibrate_project else image.name
    s.message = f"calibration: {cal.mm_per_px:.5f} mm per pixel for {where}"


def calibration_text(s: Session) -> str:
    cal = s.image.calibration if s.image else None
    if cal is None:
        return "Not calibrated: sizes in pixels only."
    source = "the project's scale" if cal.source == "project" else f"this image's, {cal.source}"
    return f"{cal.mm_per_px:.5f} mm/px ({source}); {1 / cal.mm_per_px:.1f} px per mm"


def _remeasure(s: Session) -> LesionMetrics | None:
    image = s.require_image()
    has_mask = s.mask is not None and s.mask.any()
    s.metrics = measure(s.mask, s.work_rgb, image.calibration, s.pixel_size) if has_mask else None
    return s.metrics


def measurements(s: Session) -> LesionMetrics | None:
    """Measurements of the current mask (cached until the mask or calibration changes).

    The measuring itself (~60 ms) runs outside the session's lock, on the mask and image read under it,
    so a prompt sent meanwhile is not held back; when the mask changed meanwhile, the new one is
    measured (the result is always for the mask current when this returns).
    """
    while True:
        with s.lock:
            mask, image, rgb = s.mask, s.image, s.work_rgb
            if s.metrics is not None or image is None or mask is None or not mask.any():
                return s.metrics
            pixel_size = s.pixel_size
        metrics = measure(mask, rgb, image.calibration, pixel_size)
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


class ConfirmationNeeded(DermasegError):
    """Replacing or deleting a saved lesion waits for the user's confirmation (`Session.pending`)."""


def accept(s: Session, label: str, annotator: str | None = None, *, replace: bool = False) -> int:
    """Save the current outline with `label` (committed at once), mark the image done; returns its id.

    A new lesion becomes a new annotation. A saved lesion (selected, or saved before by this tab) is
    updated from the version it was loaded at: when it was changed since it was loaded or saved,
    ConfirmationNeeded asks first (then `replace=True`, or `confirm_pending`); when someone else changed
    or deleted it meanwhile, ConflictError leaves it as stored (`resolve_conflict` offers the choice).
    annotator: the person's name for the provenance (blank: none recorded).
    """
    image = s.require_image()
    if s.image_id is None:
        raise DermasegError("this image is not in the project; reopen it from the list")
    if s.mask is None or not s.mask.any():
        raise DermasegError("nothing to accept: draw a box or click on the lesion first")
    if s.annotation_id is not None and len(s.history) > 1 and not replace:
        s.pending = ("replace", s.annotation_id)
        s.message = (
            f"Accept would replace saved {lesion_name(s, s.annotation_id)}: Confirm to replace it (Undo brings "
            "it back), Cancel to keep editing, or New lesion to save yours beside it"
        )
        raise ConfirmationNeeded(s.message)
    metrics = measurements(s)
    prov = Provenance(
        source="manual" if s.edited else "model",
        prompts=_prompts_json(s.prompts),
        model_id=s.result.model_id if s.result else None,
        annotator=(annotator or "").strip() or None,
    )
    kw = dict(polygons=s.polygons, metrics=metrics.to_dict() if metrics else None, provenance=prov)
    s.pending = None
    mask = full_mask(s)
    if s.annotation_id is not None:
        try:
            ann = s.project.update_annotation(
                s.annotation_id, mask=mask, label=label, tolerance_px=s.tolerance_px,
                expected_version=s.annotation_version, **kw,
            )  # fmt: skip
        except ConflictError as e:
            s.conflict = e.annotation_id
            s.message = f"⚠ {e}"
            raise
    else:
        ann = s.project.add_annotation(s.image_id, mask, label, tolerance_px=s.tolerance_px, **kw)
    s.project.set_status(s.image_id, "done")
    _saved_step(s, ann.id)
    s.annotation_id, s.annotation_version, s.conflict = ann.id, ann.version, None
    s.history, s.redo = [Step(s.prompts, s.polygons, mask)], []  # Undo now takes the save back
    s.project.discard_draft(s.image_id)  # accepted: nothing in progress any more
    if annotator is not None:  # the page always sends its field; API callers may leave it out
        remember_annotator(s.project, annotator)
    s.message = f"saved: {lesion_name(s, ann.id)} on {image.name} (annotation {ann.id}), marked done"
    return ann.id


# --------------------------------------------------------------------------------------------------
# several lesions per image


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def lesions(s: Session) -> list[Annotation]:
    """The open image's saved annotations, oldest first (lesion 1, 2, ...)."""
    return s.project.annotations(s.image_id) if s.image_id is not None else []


def lesion_name(s: Session, ann_id: int, saved: list[Annotation] | None = None) -> str:
    """ "lesion 2 of 3 ('naevus')": the annotation's place among the image's lesions."""
    saved = lesions(s) if saved is None else saved
    for i, a in enumerate(saved, 1):
        if a.id == ann_id:
            return f"lesion {i} of {len(saved)} ({a.label!r})"
    return f"annotation {ann_id}"


def lesion_choices(s: Session) -> list[tuple[str, str]]:
    """Radio choices for the side panel: each saved lesion (value: its id), and "new lesion" (value "new")."""
    saved = lesions(s)
    out = [(f"{i} · {a.label} · annotation {a.id} (v{a.version})", str(a.id)) for i, a in enumerate(saved, 1)]
    return [*out, ("＋ new lesion", "new")]


def _load_saved(s: Session, ann: Annotation) -> None:
    """Make a saved annotation the edited lesion, at the version it has now."""
    s.annotation_id, s.annotation_version = ann.id, ann.version
    full = ann.mask()
    s.mask = on_grid(s, full)
    s.full = (s.mask, full)
    s.polygons = Polygons.from_json(ann.polygons) if ann.polygons else outline(s, s.mask)
    s.result, s.metrics, s.edited = None, None, True
    s.history, s.redo = [Step(Prompts(), s.polygons, full)], []  # undo comes back to the saved outline
    s.pending = s.conflict = None


def select_lesion(s: Session, ann_id: int | str) -> None:
    """Edit a saved lesion of the open image (the outline being drawn, if any, is dropped)."""
    s.require_image()
    if not (isinstance(ann_id, int) or (isinstance(ann_id, str) and ann_id.isdecimal() and len(ann_id) < 19)):
        raise DermasegError(f"not an annotation id: {str(ann_id)[:40]!r}")
    saved = lesions(s)
    ann = next((a for a in saved if a.id == int(ann_id)), None)
    if ann is None:
        raise DermasegError(f"annotation {ann_id} is not a saved lesion of this image (deleted meanwhile?)")
    _load_saved(s, ann)
    s.message = f"editing {lesion_name(s, ann.id, saved)}, annotation {ann.id} version {ann.version}"


def new_lesion(s: Session) -> None:
    """Start a fresh outline beside the saved lesions, which stay as they are."""
    s.require_image()
    s.history, s.redo = [Step(Prompts())], []
    s.result = s.mask = s.polygons = s.metrics = None
    s.edited = False
    s.annotation_id = s.annotation_version = s.pending = s.conflict = None
    n = len(lesions(s))
    s.message = "new lesion: draw a box or click on it" + (f" ({_count(n, 'saved lesion')} stay as saved)" if n else "")


def delete_lesion(s: Session, *, confirmed: bool = False) -> None:
    """Delete the selected saved lesion: asks first (ConfirmationNeeded), then deletes it (undoable)."""
    s.require_image()
    if s.annotation_id is None:
        raise DermasegError("select a saved lesion first (in the list of lesions, or on the image)")
    name = lesion_name(s, s.annotation_id)
    if not confirmed:
        s.pending = ("delete", s.annotation_id)
        s.message = f"Delete {name}? Confirm to delete it (Undo brings it back), or Cancel"
        raise ConfirmationNeeded(s.message)
    ann_id = s.annotation_id
    try:
        s.project.delete_annotation(ann_id, expected_version=s.annotation_version)
    except ConflictError as e:
        s.pending, s.conflict, s.message = None, e.annotation_id, f"⚠ {e}"
        raise
    _saved_step(s, ann_id)
    new_lesion(s)
    s.message = f"deleted {name} (annotation {ann_id}); Undo brings it back"


def confirm_pending(s: Session, label: str, annotator: str | None = None) -> None:
    """Carry out the replace or delete the user was asked about."""
    if s.pending is None or s.pending[1] != s.annotation_id:
        s.pending = None
        raise DermasegError("nothing to confirm")
    if s.pending[0] == "delete":
        delete_lesion(s, confirmed=True)
    else:
        accept(s, label, annotator, replace=True)


def cancel_pending(s: Session) -> None:
    s.pending = None
    s.message = "cancelled: nothing was saved or deleted"


def resolve_conflict(s: Session, choice: str, label: str, annotator: str | None = None) -> None:
    """After a refused save: "reload" shows the stored version (or a new lesion if it was deleted),
    dropping this tab's edit; "keep_both" saves this tab's outline as a new annotation beside it."""
    if s.conflict is None:
        raise DermasegError("no conflicting save to resolve")
    ann_id, s.conflict = s.conflict, None
    if choice == "reload":
        saved = {a.id: a for a in lesions(s)}
        if ann_id in saved:
            select_lesion(s, ann_id)
            s.message = f"reloaded the saved version: {s.message}"
        else:
            new_lesion(s)
            s.message = f"annotation {ann_id} was deleted; {s.message}"
    elif choice == "keep_both":
        s.annotation_id = s.annotation_version = None
        accept(s, label, annotator)
    else:
        raise DermasegError(f"unknown choice {choice!r}: reload or keep_both")


def _saved_step(s: Session, ann_id: int) -> None:
    """Remember the store step just made (for the page's Undo); the store dropped its redo steps."""
    action = s.project.last_action(s.image_id) if s.image_id is not None else None
    if action is not None:
        s.saved_steps.append((action, ann_id))
    s.saved_redo.clear()


def _undo_saved(s: Session, redo: bool = False) -> None:
    """Undo (or redo) this tab's last save or delete on the image, then edit that lesion as it is now."""
    src, dst = (s.saved_redo, s.saved_steps) if redo else (s.saved_steps, s.saved_redo)
    action, ann_id = src[-1]
    s.require_image()
    (s.project.redo if redo else s.project.undo)(s.image_id, action)  # StoreError if another tab's step came after
    dst.append(src.pop())
    saved = lesions(s)
    ann = next((a for a in saved if a.id == ann_id), None)
    if ann is not None:
        _load_saved(s, ann)
    else:
        mask, polygons, full = s.mask, s.polygons, s.full
        new_lesion(s)
        if not redo and mask is not None and polygons is not None:  # a save taken back: its outline stays, unsaved
            s.mask, s.polygons, s.edited, s.full = mask, polygons, True, full
            s.history = [Step(Prompts(), polygons, full_mask(s))]
    what = "redone" if redo else "undone"
    s.message = (
        f"{what}: {lesion_name(s, ann_id, saved)} is back as saved (version {ann.version})"
        if ann is not None
        else f"{what}: annotation {ann_id} is no longer saved"
    )


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
    """COCO JSON of the current image's saved annotations (`Project.export_coco` for that image: the same
    category ids, polygons and tolerance as a project export) and its PNG mask (union of them)."""
    image = s.require_image()
    if s.image_id is None or not s.project.annotations(s.image_id):
        raise DermasegError(f"nothing to export for {image.name}: accept an annotation first")
    rec = s.project.image(s.image_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _slug(Path(rec.path).stem)
    masks = out_dir / f"{stem}-masks"
    report = s.project.export_coco(out_dir / f"{stem}-coco.json", masks_dir=masks, image_ids=[rec.id])
    png = out_dir / f"{stem}-mask.png"
    (masks / PurePosixPath(rec.path).with_suffix(".png")).replace(png)
    shutil.rmtree(masks, ignore_errors=True)
    return [report.coco_path, png]


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
    """Everything the canvas draws, as JSON: image URL and size, outline, prompts, ruler, axes.

    "polygons" is the outline being edited; "lesions" are the image's saved annotations (id, number
    among them, label, version, polygons in the same format, selected: the one being edited, whose live
    outline is "polygons"); "annotation_id" / "annotation_version": the edited one (None: a new lesion)."""
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
    out["annotation_id"], out["annotation_version"] = s.annotation_id, s.annotation_version
    out["lesions"] = [
        {
            "id": a.id,
            "number": i,
            "label": a.label,
            "version": a.version,
            "polygons": (a.polygons or {}).get("parts", []),
            "selected": a.id == s.annotation_id,
        }
        for i, a in enumerate(lesions(s), 1)
    ]
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
    | {"type": "edit", "polygons": [parts]} | {"type": "ruler", "x", "y"}
    | {"type": "select", "annotation_id": N} (edit saved lesion N) | {"type": "new_lesion"}
    | {"type": "paint", "points": [[x, y], ...], "radius": r, "erase": bool}, each with an optional "seq".
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
        elif kind == "select":
            select_lesion(s, int(g["annotation_id"]))
        elif kind == "new_lesion":
            new_lesion(s)
        elif kind == "edit":
            image = s.require_image()
            return edit_polygons(s, {"width": image.width, "height": image.height, "parts": g["polygons"]})
        elif kind == "paint":
            paint(s, g["points"], g["radius"], bool(g.get("erase", False)))
        else:
            raise DermasegError(f"unknown gesture {kind!r}")
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise DermasegError(f"malformed gesture from the page ({e.__class__.__name__}: {e})") from None
    return ()
