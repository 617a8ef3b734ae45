"""One browser tab's state: its segmenter, the open image, the outline drawn on it and its undo stack."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.annotation.metrics import LesionMetrics
from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.image import LesionImage
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.interactive.work_grid import work_shape
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import MaskResult, Segmenter
from dermaseg.webui.page.undo import UndoStack, UndoStep

# The page's default outline simplification (px of the working grid): the editable outline shown on the
# canvas, fewer vertices to drag. The store's own default (exact pixel-edge outlines) is 0.
OUTLINE_SIMPLIFICATION_PX = 1.0


@dataclass
class Session:
    """One browser tab: its segmenter, the open image and everything drawn on it.

    undo: the tab's undo stack (`undo.UndoStack`: edits in memory, saves and deletes in the store).
    mask: the current lesion mask, from the model or rasterised from edited polygons, bool on the working
    grid (`mask_shape()`: the image itself up to `interactive.WORK_MAX_SIDE` px a side, else scaled down to
    it, so that a prompt costs the same on a 12-megapixel photo); `masks.full_mask` gives it at image
    resolution. work_rgb: the image on that grid (for the measurements). full: (mask, the same at image
    resolution), made once when saved.
    polygons: the editable outline shown on the page (simplified with `tolerance_px`), in image pixels.
    annotation_id / annotation_version: the saved lesion being edited and the version it was loaded (or
    saved) at; None while a new lesion is drawn. Every other saved lesion of the image stays as stored.
    pending: ("replace" | "delete", annotation id) waiting for the user's confirmation.
    conflict: the annotation whose save was refused (`ConflictError`), waiting for "Reload" or "Keep both".
    lock: held by every page event on this session (`events.bound`): one tab's events run one at a time,
    different tabs in parallel. Re-entrant, so a handler may call another that takes it.
    channel: an unguessable token naming this session to the canvas's fast path (`gesture_route`).
    user: the logged-in user (`team.identify`), None until known; team: the project has users, so saved
    lesions are shown as that user may see them (`lesions.lesions`).
    preview_to: while the fast path answers a gesture, what sends the page a prompt's preview
    (`masks.predict`); None otherwise.
    """

    segmenter: Segmenter
    project: Project
    views_dir: Path
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    image: LesionImage | None = None
    image_id: int | None = None
    undo: UndoStack = field(default_factory=UndoStack)
    head: int | str = 0
    result: MaskResult | None = None
    mask: np.ndarray | None = None
    polygons: Polygons | None = None
    edited: bool = False
    tolerance_px: float = OUTLINE_SIMPLIFICATION_PX
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
    ack: int = 0  # sequence number of the last gesture handled, echoed to the page for timing
    message: str = ""
    channel: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    user: str | None = None
    preview_to: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    team: bool = field(init=False)
    clicks: InteractiveSession = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.clicks = InteractiveSession(self.segmenter)
        self.team = self.project.has_users()

    @property
    def prompts(self) -> Prompts:
        return self.undo.current.prompts

    @property
    def history(self) -> list[UndoStep]:
        """The undoable edits, the last one current (`UndoStack.edits`)."""
        return self.undo.edits

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
