"""The page's events: each Gradio event runs one action on the tab's Session and answers what changed.

`Events` holds what every handler needs (engine, project, settings, the prefetcher, the export folder);
its methods are the handlers, written for a Session; `wire` connects them to the components of `layout`
with their api names (the JS in `static/` and gradio_client call those names: keep them), each one
`bound` to the tab's session and lock.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.segment.segmenter import Engine
from dermaseg.core.settings import Settings
from dermaseg.webui.page.agreement import compute_agreement, dice_axis_min
from dermaseg.webui.page.exports import check_export, export_image, export_project
from dermaseg.webui.page.gestures import handle_gesture
from dermaseg.webui.page.lesions import lesion_choices, lesions, new_lesion, select_lesion
from dermaseg.webui.page.measuring import measurements
from dermaseg.webui.page.opening import (
    damaged_note,
    last_image_id,
    needs_encoding,
    neighbour_id,
    open_project_image,
    remember_annotator,
    remembered_annotator,
)
from dermaseg.webui.page.prefetch import Prefetcher
from dermaseg.webui.page.prompts import prompt_box, prompt_click
from dermaseg.webui.page.saving import accept, resolve_conflict
from dermaseg.webui.page.server import file_url
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.uploads import add_upload
from dermaseg.webui.page.views import (
    calibration_text,
    candidate_choices,
    gallery_choices,
    metrics_html,
    progress_summary,
    view_json,
)

AGREEMENT_PROGRESS = "measuring agreement, one image at a time"
SAVED_TOAST_S = 3  # the "saved" toast covers the image list: gone before the next save would stack another


class SessionRef:
    """A `gr.State` value: Gradio deep-copies it for each browser session; the copy makes its Session lazily
    (once, even when two of the session's events arrive together)."""

    def __init__(self, make: Callable[[], Session]) -> None:
        self.make = make
        self.session: Session | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> SessionRef:
        return SessionRef(self.make)

    def get(self) -> Session:
        with self._lock:
            if self.session is None:
                self.session = self.make()
            return self.session


def bound(fn: Callable[..., Any], lock: bool = True) -> Callable[..., Any]:
    """Let a handler written for a Session take the `SessionRef` that Gradio's state holds, and run it under
    the session's lock (lock=False: the handler takes the lock itself, around what needs it)."""

    @functools.wraps(fn)
    def run(ref: SessionRef, *args: Any, **kwargs: Any) -> Any:
        s = ref.get() if isinstance(ref, SessionRef) else ref
        with s.lock if lock else contextlib.nullcontext():
            return fn(s, *args, **kwargs)

    return run


@contextlib.contextmanager
def reported(s: Session | None = None) -> Iterator[None]:
    """Show a user error in the page (toast and canvas status) instead of failing the event."""
    try:
        yield
    except DermasegError as e:
        if s is not None:
            s.message = f"⚠ {e}"
        gr.Warning(str(e))


def canvas_out(s: Session) -> str:
    """The canvas's new value: the view as JSON."""
    return view_json(s, file_url)


class Events:
    """The page's event handlers for one project (every browser tab shares them; state is in the Session)."""

    def __init__(
        self, engine: Engine, project: Project, settings: Settings, exports_dir: Path, *, logins: bool = False
    ) -> None:
        """logins: the project has users, so the page is served with their login (`project_login`) and each
        save names the logged-in user; without, it names whom the annotator field says."""
        self.engine, self.project, self.settings, self.exports_dir = engine, project, settings, exports_dir
        self.logins = logins
        self.prefetcher = Prefetcher(engine)

    # ---- what several events answer

    def head_update(self, s: Session) -> dict[str, Any]:
        return gr.update(choices=candidate_choices(s), value=str(s.head))

    def list_update(self, s: Session) -> dict[str, Any]:
        return gr.update(choices=gallery_choices(self.project), value=s.image_id)

    def lesion_panel(self, s: Session) -> tuple[Any, ...]:
        """The lesions radio, the confirm row (replace / delete asked first) and the conflict row."""
        chosen = str(s.annotation_id) if s.annotation_id is not None else "new"
        pending = s.pending is not None and s.pending[1] == s.annotation_id
        conflict = s.conflict is not None
        return (
            gr.update(choices=lesion_choices(s) if s.image is not None else [], value=chosen),
            gr.update(visible=pending),
            gr.update(value=s.message.lstrip("⚠ ") if pending else ""),
            gr.update(visible=conflict),
            gr.update(value=s.message.lstrip("⚠ ") if conflict else ""),
        )

    def saved_outputs(self, s: Session) -> tuple[Any, ...]:
        """The canvas, the image list and the summary (after a lesion was saved, deleted or picked)."""
        return canvas_out(s), self.list_update(s), progress_summary(self.project)

    def open_outputs(self, s: Session) -> tuple[Any, ...]:
        labels = list(self.project.labels())
        ann = lesions(s)
        label = ann[-1].label if ann else labels[0]
        cal = s.image.calibration if s.image else None
        return (
            canvas_out(s),
            self.list_update(s),
            progress_summary(self.project),
            metrics_html(s.metrics),
            self.head_update(s),
            calibration_text(s),
            gr.update(value=cal.mm_per_px if cal else None),
            gr.update(choices=labels, value=label),
            *self.lesion_panel(s),
        )

    # ---- opening images

    def open_id(self, s: Session, image_id: int | None, progress: gr.Progress) -> tuple[Any, ...]:
        with reported(s):
            if image_id is None:
                raise DermasegError("this project has no images yet: upload one or add files to the folder")
            image = self.project.load_image(int(image_id))
            if needs_encoding(self.engine, image):
                progress(0.1, desc="Computing the image embedding (first time for this image)…")
            open_project_image(s, int(image_id))
            self.prefetcher.prepare_clicks(s)  # the mirror image's embedding, before the next images'
            self.prefetcher.schedule(self.project, int(image_id))
            damaged = damaged_note(self.project.damaged_annotations(int(image_id)))
            if damaged:
                gr.Warning(damaged)
        return self.open_outputs(s)

    def on_load(self, s: Session, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        last = last_image_id(self.project)  # the page reopens the image the user was on
        todo = self.project.images(("not_started", "in_progress")) or self.project.images()
        return self.open_id(s, last if last is not None else todo[0].id if todo else None, progress)

    def on_pick(self, s: Session, image_id: int | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return self.open_id(s, image_id, progress)

    def on_step(self, step: int) -> Callable[..., tuple[Any, ...]]:
        """The Previous (-1) or Next (+1) button's handler."""

        def go(s: Session, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
            return self.open_id(s, neighbour_id(self.project, s.image_id, step), progress)

        return go

    def on_upload(self, s: Session, path: str | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        if not path:
            return self.open_outputs(s)
        with reported(s):
            data = Path(path).read_bytes()
            return self.open_id(s, add_upload(self.project, data, Path(path).name, self.settings.max_pixels), progress)
        return self.open_outputs(s)

    # ---- the canvas

    def on_gesture(self, s: Session, payload: str) -> str:
        with reported(s):
            for w in handle_gesture(s, payload):
                gr.Info(w)
        return canvas_out(s)

    def answer_gesture(self, s: Session, gesture: dict[str, Any], preview: Callable[[str], None]) -> str:
        """The fast path's handler (`gesture_route`): no toasts there, the canvas status says it all.
        `preview` is given the view of a prompt's preview, to draw while the final answer is made."""
        with s.lock:
            s.preview_to = lambda: preview(canvas_out(s))
            try:
                handle_gesture(s, {**gesture, "kind": "gesture"})
            except DermasegError as e:
                s.message = f"⚠ {e}"
            finally:
                s.preview_to = None
            return canvas_out(s)

    def on_measure(self, s: Session) -> tuple[Any, ...]:
        """Run with lock=False: measures outside the session's lock, so the next prompt need not wait."""
        with reported(s):
            measurements(s)
        with s.lock:
            return (
                canvas_out(s),
                metrics_html(s.metrics),
                self.head_update(s),
                progress_summary(self.project),
                *self.lesion_panel(s),
            )

    def on_click_api(self, s: Session, x: float, y: float, positive: bool) -> str:
        with reported(s):
            prompt_click(s, x, y, positive)
        return canvas_out(s)

    def on_box_api(self, s: Session, x0: float, y0: float, x1: float, y1: float) -> str:
        with reported(s):
            prompt_box(s, (x0, y0, x1, y1))
        return canvas_out(s)

    @staticmethod
    def simple(action: Callable[..., Any]) -> Callable[..., str]:
        """A handler that runs `action(s, *args)` and answers the canvas."""

        def run(s: Session, *args: Any) -> str:
            with reported(s):
                action(s, *args)
            return canvas_out(s)

        return run

    def on_heatmap(self, s: Session, on: bool) -> str:
        s.heatmap = bool(on)
        return canvas_out(s)

    # ---- calibration

    def on_calibration_scope(self, s: Session, project_wide: bool) -> str:
        s.calibrate_project = bool(project_wide)
        return calibration_text(s)

    @staticmethod
    def on_calibrate(action: Callable[[Session, float], Any]) -> Callable[..., tuple[Any, ...]]:
        """The Set / Use ruler handler: `action(s, value)`, then the canvas, scale and measurements."""

        def run(s: Session, value: float | None) -> tuple[Any, ...]:
            with reported(s):
                if value is None:
                    raise DermasegError("enter a number first")
                action(s, value)
            return canvas_out(s), calibration_text(s), metrics_html(s.metrics)

        return run

    # ---- lesions, labels, annotator

    def annotator(self, request: gr.Request | None, typed: str | None) -> str | None:
        """Who a save names. With logins: the user Gradio's session names (`request.username`, from the login
        cookie), who must still be enabled; the field's value `typed` is ignored, since a client can send any
        name there. Without: `typed`."""
        if not self.logins:
            return typed
        name = getattr(request, "username", None)
        if not name:
            raise DermasegError("log in to save: this project's annotations name who saved them")
        user = self.project.user(name)
        if user.disabled:
            raise DermasegError(f"{user.name!r} is disabled in this project: nothing was saved")
        return user.name

    def on_who(self, request: gr.Request) -> str:
        """The annotator field at page load: the logged-in user and their role, or the remembered name."""
        if not self.logins:
            return remembered_annotator(self.project)
        with reported():
            user = self.project.user(getattr(request, "username", None) or "")
            return f"{user.name} ({user.role}{', disabled' if user.disabled else ''})"
        return ""

    def on_accept(
        self,
        s: Session,
        label: str,
        annotator: str | None = None,
        request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it
    ) -> tuple[Any, ...]:
        with reported(s):
            accept(s, label, self.annotator(request, annotator))
            gr.Info(s.message, duration=SAVED_TOAST_S)
        return self.saved_outputs(s)

    def saving(self, action: Callable[..., Any]) -> Callable[..., tuple[Any, ...]]:
        """A button that saves (`action(s, label, annotator)`: Confirm, Keep both) with the annotator
        `annotator` names, then answers as `lesion_action`."""

        def run(s: Session, label: str, annotator: str | None, request: gr.Request) -> tuple[Any, ...]:
            with reported(s):
                action(s, label, self.annotator(request, annotator))
                gr.Info(s.message)
            return self.saved_outputs(s)

        return run

    def lesion_action(self, action: Callable[..., Any]) -> Callable[..., tuple[Any, ...]]:
        """A lesion button's handler that saves nothing: `action(s, *args)`, then the canvas, image list and
        summary (`saving` is for the buttons that save)."""

        def run(s: Session, *args: Any) -> tuple[Any, ...]:
            with reported(s):
                action(s, *args)
            return self.saved_outputs(s)

        return run

    @staticmethod
    def resolver(choice: str) -> Callable[..., None]:
        """The conflict row's button: "reload" or "keep_both"."""
        return lambda s, label, annotator: resolve_conflict(s, choice, label, annotator)

    def on_select(self, s: Session, choice: str | None) -> tuple[Any, ...]:
        """A lesion picked in the side panel ("new": a new lesion); the label picker shows its label."""
        with reported(s):
            if choice and choice != "new":
                select_lesion(s, choice)
            else:
                new_lesion(s)
        chosen = next((a.label for a in lesions(s) if a.id == s.annotation_id), None)
        return (*self.saved_outputs(s), gr.update(value=chosen) if chosen else gr.update())

    def on_labels(self, s: Session, text: str) -> dict[str, Any]:
        with reported(s):
            self.project.set_labels([t.strip() for t in text.split(",") if t.strip()])
        return gr.update(choices=list(self.project.labels()), value=self.project.labels()[0])

    def on_annotator(self, name: str | None) -> None:
        if self.logins:  # the field shows the login; nothing typed there is kept
            return
        with reported():
            remember_annotator(self.project, name)

    # ---- agreement between raters

    def on_agreement(self, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        """Compute the agreement view (no session: it only reads the project, one image at a time)."""
        with reported():
            view = compute_agreement(
                self.project,
                lambda images, total, _: progress.tqdm(images, total=total, desc=AGREEMENT_PROGRESS, unit="image"),
            )
            plot = gr.BarPlot(view.plot, y_lim=[dice_axis_min(view.plot), 1.0]) if len(view.plot) else None
            return view.summary, plot, view.table
        return gr.update(), gr.update(), gr.update()

    def on_agreement_row(
        self,
        s: Session,
        evt: gr.SelectData,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        """A row of the agreement table selected: open its image (the row's first cell) in the editor."""
        name = str((evt.row_value or ["that row"])[0])
        with reported(s):
            rec = self.project.image_by_path(name)
            if rec is None:
                raise DermasegError(f"{name}: no such image in this project (any more); compute the agreement again")
            return self.open_id(s, rec.id, progress)
        return self.open_outputs(s)

    # ---- exports

    def session_exports(self) -> Path:
        return self.exports_dir / uuid.uuid4().hex[:12]

    def on_export_project(self, s: Session) -> Any:
        with reported(s):
            check_export(s)
            paths = [str(p) for p in export_project(self.project, self.session_exports())]
            damaged = damaged_note(self.project.damaged_annotations())
            if damaged:
                gr.Warning(f"exported every healthy annotation; {damaged}")
            return paths
        return gr.update()  # nothing exported: the links of an earlier export stay

    def on_export_image(self, s: Session) -> Any:
        with reported(s):
            return [str(p) for p in export_image(s, self.session_exports())]
        return gr.update()  # nothing exported: the links of an earlier export stay
