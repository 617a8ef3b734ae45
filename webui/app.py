"""The dermaseg page: Gradio layout and event wiring over `handlers` (no segmentation logic here).

`build_app(engine, project, settings)` makes the Blocks; `launch(app, ...)` serves it offline: analytics
and run history off, system fonts, loopback by default, Gradio's files under the cache folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.image import IMAGE_SUFFIXES
from dermaseg.core.offline import disable_telemetry
from dermaseg.core.segment.segmenter import Engine
from dermaseg.core.settings import Settings
from dermaseg.webui import handlers as h
from dermaseg.webui.canvas import STATIC, Canvas
from dermaseg.webui.gesture_route import gesture_route
from dermaseg.webui.login import LoginLimits, LoginThrottle

THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
SHORTCUTS = (
    "Shortcuts: B box · C lesion click · X not-lesion click (or Alt/Shift-click) · E edit outline · "
    "D brush · Shift+D eraser · [ ] brush size · V select a saved lesion · R ruler · O outline only · "
    "wheel / pinch zoom · Space-drag or middle-drag pan · F fit · 1 one to one · "
    "Ctrl+Z / Ctrl+Shift+Z undo / redo · Esc clear · A accept · ← / → previous / next image"
)
SAVED_TOAST_S = 3  # the "saved" toast covers the image list: gone before the next save would stack another
OPENING_JS = "() => { window.__dsOpening && window.__dsOpening(); }"  # the canvas's progress bar (canvas.js)
MAX_UPLOAD = "200mb"  # Gradio refuses larger uploads; the core pixel limit (Settings.max_pixels) applies after
# Gradio routes that make the server fetch a URL: `/file=<http URL>` (streamed through the server) and
# `/proxy=` (for gr.load, unused here). An offline tool must never reach out, whatever a page asks.
OUTSIDE_FETCH = re.compile(r"/(?:file=|file/|proxy=)(?:[A-Za-z][A-Za-z0-9+.-]*:|//|\\\\)")


def webui_dir(settings: Settings) -> Path:
    """Where the page keeps its files: display JPEGs, exports, Gradio's temporary files."""
    return settings.cache_dir / "webui"


def configure_environment(settings: Settings) -> None:
    """Offline and private Gradio settings; call before building the app."""
    disable_telemetry()  # Gradio analytics, huggingface_hub, the runtimes (done already when dermaseg.webui loaded)
    os.environ["GRADIO_RUN_HISTORY"] = "False"
    os.environ.setdefault("GRADIO_TEMP_DIR", str(webui_dir(settings) / "gradio"))
    for var in ("NO_PROXY", "no_proxy"):
        have = [v for v in os.environ.get(var, "").split(",") if v]
        os.environ[var] = ",".join(dict.fromkeys([*have, "127.0.0.1", "localhost"]))


def scratch_folder(settings: Settings) -> Path:
    """The folder of the project used when none is given."""
    return settings.cache_dir / "scratch"


def scratch_project(settings: Settings) -> Project:
    """The project used when none is given: uploads land in `<cache>/scratch/uploads/`."""
    folder = scratch_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    return Project.init(folder)


def file_url(path: Path) -> str:
    """A URL the page can load `path` from (relative, so it works under a root path too)."""
    return f"gradio_api/file={path}"


class LocalOnly:
    """ASGI middleware: refuse the Gradio routes that would make this server fetch a URL (see OUTSIDE_FETCH)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and OUTSIDE_FETCH.search(scope.get("path", "")):
            refused = PlainTextResponse("dermaseg is offline: it serves local files only", status_code=403)
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LocalFile(gr.File):
    """A file upload that takes only files the browser sent to Gradio's upload folder.

    Through the API a caller may name any path or URL as the "uploaded" file; Gradio itself accepts
    files under the working directory and the system temp folder, and downloads URLs. Both are refused.
    """

    is_template = True  # drawn by the page as the plain File component

    def _check_source(self, path: str | Path | None) -> None:
        if path is None:
            return
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", str(path)):
            raise gr.Error("dermaseg is offline: upload a file from this computer, not a URL")
        resolved = Path(path).resolve()  # symlinks followed: a link in the upload folder may lead anywhere
        if not resolved.is_relative_to(Path(get_upload_folder()).resolve()):
            raise gr.Error("only files sent from the browser can be opened (use the upload box)")

    async def async_move_resource_to_block_cache(self, url_or_file_path: str | Path | None) -> str | None:
        self._check_source(url_or_file_path)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def move_resource_to_block_cache(self, url_or_file_path: str | Path | None) -> str | None:
        self._check_source(url_or_file_path)
        return super().move_resource_to_block_cache(url_or_file_path)


@contextlib.contextmanager
def reported(s: h.Session | None = None) -> Iterator[None]:
    """Show a user error in the page (toast and canvas status) instead of failing the event."""
    try:
        yield
    except DermasegError as e:
        if s is not None:
            s.message = f"⚠ {e}"
        gr.Warning(str(e))


def build_app(engine: Engine, project: Project | None = None, settings: Settings | None = None) -> gr.Blocks:
    """The annotation page for `project` (a scratch project when None), served by `launch`."""
    settings = settings or Settings.from_env()
    configure_environment(settings)
    project = project or scratch_project(settings)
    base = webui_dir(settings)
    views_dir, exports_dir = base / "views", base / "exports"
    prefetcher = h.Prefetcher(engine)
    channels: weakref.WeakValueDictionary[str, h.Session] = weakref.WeakValueDictionary()  # gone with Gradio's state

    def new_session() -> h.Session:
        s = h.Session(engine.segmenter(), project, views_dir)
        channels[s.channel] = s
        return s

    def canvas_out(s: h.Session) -> str:
        return h.view_json(s, file_url)

    def head_update(s: h.Session) -> dict[str, Any]:
        return gr.update(choices=h.candidate_choices(s), value=str(s.head))

    def list_update(s: h.Session) -> dict[str, Any]:
        return gr.update(choices=h.gallery_choices(project), value=s.image_id)

    def lesion_panel(s: h.Session) -> tuple[Any, ...]:
        """The lesions radio, the confirm row (replace / delete asked first) and the conflict row."""
        chosen = str(s.annotation_id) if s.annotation_id is not None else "new"
        pending = s.pending is not None and s.pending[1] == s.annotation_id
        conflict = s.conflict is not None
        return (
            gr.update(choices=h.lesion_choices(s) if s.image is not None else [], value=chosen),
            gr.update(visible=pending),
            gr.update(value=s.message.lstrip("⚠ ") if pending else ""),
            gr.update(visible=conflict),
            gr.update(value=s.message.lstrip("⚠ ") if conflict else ""),
        )

    def open_outputs(s: h.Session) -> tuple[Any, ...]:
        labels = list(project.labels())
        ann = project.annotations(s.image_id) if s.image_id is not None else []
        label = ann[-1].label if ann else labels[0]
        cal = s.image.calibration if s.image else None
        return (
            canvas_out(s),
            list_update(s),
            h.progress_summary(project),
            h.metrics_html(s.metrics),
            head_update(s),
            h.calibration_text(s),
            gr.update(value=cal.mm_per_px if cal else None),
            gr.update(choices=labels, value=label),
            *lesion_panel(s),
        )

    def open_id(s: h.Session, image_id: int | None, progress: gr.Progress) -> tuple[Any, ...]:
        with reported(s):
            if image_id is None:
                raise DermasegError("this project has no images yet: upload one or add files to the folder")
            image = project.load_image(int(image_id))
            if h.needs_encoding(engine, image):
                progress(0.1, desc="Computing the image embedding (first time for this image)…")
            h.open_project_image(s, int(image_id))
            prefetcher.schedule(project, int(image_id))
            damaged = h.damaged_note(project.damaged_annotations(int(image_id)))
            if damaged:
                gr.Warning(damaged)
        return open_outputs(s)

    @bound
    def on_load(s: h.Session, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        last = h.last_image_id(project)  # the page reopens the image the user was on
        todo = project.images(("not_started", "in_progress")) or project.images()
        return open_id(s, last if last is not None else todo[0].id if todo else None, progress)

    @bound
    def on_pick(s: h.Session, image_id: int | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return open_id(s, image_id, progress)

    def on_step(step: int):
        @bound
        def go(s: h.Session, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
            return open_id(s, h.neighbour_id(project, s.image_id, step), progress)

        return go

    @bound
    def on_upload(s: h.Session, path: str | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        if not path:
            return open_outputs(s)
        with reported(s):
            data = Path(path).read_bytes()
            return open_id(s, h.add_upload(project, data, Path(path).name, settings.max_pixels), progress)
        return open_outputs(s)

    @bound
    def on_gesture(s: h.Session, payload: str) -> str:
        with reported(s):
            for w in h.handle_gesture(s, payload):
                gr.Info(w)
        return canvas_out(s)

    def answer_gesture(s: h.Session, gesture: dict[str, Any]) -> str:
        """The fast path's handler (`gesture_route`): no toasts there, the canvas status says it all."""
        with s.lock:
            try:
                h.handle_gesture(s, {**gesture, "kind": "gesture"})
            except DermasegError as e:
                s.message = f"⚠ {e}"
            return canvas_out(s)

    @functools.partial(bound, lock=False)
    def on_measure(s: h.Session) -> tuple[Any, ...]:
        with reported(s):
            h.measurements(s)  # measures outside the session's lock: the next prompt need not wait for it
        with s.lock:
            return (
                canvas_out(s),
                h.metrics_html(s.metrics),
                head_update(s),
                h.progress_summary(project),
                *lesion_panel(s),
            )

    @bound
    def on_click_api(s: h.Session, x: float, y: float, positive: bool) -> str:
        with reported(s):
            h.prompt_click(s, x, y, positive)
        return canvas_out(s)

    @bound
    def on_box_api(s: h.Session, x0: float, y0: float, x1: float, y1: float) -> str:
        with reported(s):
            h.prompt_box(s, (x0, y0, x1, y1))
        return canvas_out(s)

    def simple(action):
        @bound
        def run(s: h.Session, *args: Any) -> str:
            with reported(s):
                action(s, *args)
            return canvas_out(s)

        return run

    @bound
    def on_heatmap(s: h.Session, on: bool) -> str:
        s.heatmap = bool(on)
        return canvas_out(s)

    @bound
    def on_calibration_scope(s: h.Session, project_wide: bool) -> str:
        s.calibrate_project = bool(project_wide)
        return h.calibration_text(s)

    def on_calibrate(action):
        @bound
        def run(s: h.Session, value: float | None) -> tuple[Any, ...]:
            with reported(s):
                if value is None:
                    raise DermasegError("enter a number first")
                action(s, value)
            return canvas_out(s), h.calibration_text(s), h.metrics_html(s.metrics)

        return run

    @bound
    def on_accept(s: h.Session, label: str, annotator: str | None = None) -> tuple[Any, ...]:
        with reported(s):
            h.accept(s, label, annotator)
            gr.Info(s.message, duration=SAVED_TOAST_S)
        return canvas_out(s), list_update(s), h.progress_summary(project)

    def lesion_action(action: Callable[..., Any], toast: bool = False):
        """A lesion button's handler: `action(s, *args)`, then the canvas, image list and summary."""

        @bound
        def run(s: h.Session, *args: Any) -> tuple[Any, ...]:
            with reported(s):
                action(s, *args)
                if toast:
                    gr.Info(s.message)
            return canvas_out(s), list_update(s), h.progress_summary(project)

        return run

    def resolver(choice: str) -> Callable[..., None]:
        return lambda s, label, annotator: h.resolve_conflict(s, choice, label, annotator)

    @bound
    def on_select(s: h.Session, choice: str | None) -> tuple[Any, ...]:
        """A lesion picked in the side panel ("new": a new lesion); the label picker shows its label."""
        with reported(s):
            if choice and choice != "new":
                h.select_lesion(s, choice)
            else:
                h.new_lesion(s)
        chosen = next((a.label for a in h.lesions(s) if a.id == s.annotation_id), None)
        return (
            canvas_out(s),
            list_update(s),
            h.progress_summary(project),
            gr.update(value=chosen) if chosen else gr.update(),
        )

    @bound
    def on_labels(s: h.Session, text: str) -> dict[str, Any]:
        with reported(s):
            project.set_labels([t.strip() for t in text.split(",") if t.strip()])
        return gr.update(choices=list(project.labels()), value=project.labels()[0])

    def session_exports(s: h.Session) -> Path:
        return exports_dir / uuid.uuid4().hex[:12]

    @bound
    def on_export_project(s: h.Session) -> Any:
        with reported(s):
            paths = [str(p) for p in h.export_project(project, session_exports(s))]
            damaged = h.damaged_note(project.damaged_annotations())
            if damaged:
                gr.Warning(f"exported every healthy annotation; {damaged}")
            return paths
        return gr.update()  # nothing exported: the links of an earlier export stay

    def on_annotator(name: str | None) -> None:
        with reported():
            h.remember_annotator(project, name)

    @bound
    def on_export_image(s: h.Session) -> Any:
        with reported(s):
            return [str(p) for p in h.export_image(s, session_exports(s))]
        return gr.update()  # nothing exported: the links of an earlier export stay

    with gr.Blocks(title="dermaseg", analytics_enabled=False) as app:
        # Not a callable: Gradio would re-run a callable state at page load, racing `on_load` and
        # replacing the session it just opened. Gradio deep-copies this value once per browser session.
        state = gr.State(SessionRef(new_session))
        with gr.Row(elem_id="ds-header", equal_height=True):
            gr.Markdown("### dermaseg · skin lesion annotation", elem_id="ds-title")
            summary = gr.Markdown(h.progress_summary(project), elem_id="ds-summary")
        with gr.Row(elem_id="ds-main"):
            with gr.Column(scale=3, min_width=600):
                canvas = Canvas(elem_id="ds-canvas")
                with gr.Row(elem_id="ds-prompt-tools"):
                    undo = gr.Button("↶ Undo", size="sm", elem_id="ds-undo")
                    redo = gr.Button("↷ Redo", size="sm", elem_id="ds-redo")
                    clear = gr.Button("✕ Clear prompts", size="sm", elem_id="ds-clear")
                    heatmap = gr.Checkbox(label="Probability heatmap", value=False, elem_id="ds-heatmap")
                gr.Markdown(SHORTCUTS, elem_id="ds-shortcuts")
            with gr.Column(scale=2, min_width=380, elem_id="ds-side"):
                with gr.Group():
                    image_list = gr.Dropdown(
                        choices=h.gallery_choices(project),
                        label=f"Images in {project.root.name}  (○ not started · ◐ in progress · ● done)",
                        elem_id="ds-images",
                        interactive=True,
                    )
                    with gr.Row():
                        prev_btn = gr.Button("← Previous", size="sm", elem_id="ds-prev")
                        next_btn = gr.Button("Next →", size="sm", elem_id="ds-next")
                with gr.Group():
                    with gr.Row(equal_height=True):
                        label = gr.Dropdown(choices=list(project.labels()), label="Label", scale=2, elem_id="ds-label")
                        accept_btn = gr.Button("✓ Accept & save", variant="primary", scale=1, elem_id="ds-accept")
                    labels_text = gr.Textbox(
                        value=", ".join(project.labels()), label="Label classes (comma-separated; Enter saves)",
                        max_lines=1, elem_id="ds-labels",
                    )  # fmt: skip
                with gr.Group(elem_id="ds-lesion-panel"):
                    lesion_pick = gr.Radio(
                        choices=[], label="Lesions on this image (select one to edit it)", elem_id="ds-lesions"
                    )
                    with gr.Row():
                        new_btn = gr.Button("＋ New lesion", size="sm", elem_id="ds-new-lesion")
                        delete_btn = gr.Button("🗑 Delete lesion", size="sm", elem_id="ds-delete-lesion")
                    with gr.Row(visible=False, elem_id="ds-confirm-row") as confirm_row:
                        confirm_text = gr.Markdown(elem_id="ds-confirm-text")
                        confirm_btn = gr.Button("Confirm", variant="stop", size="sm", elem_id="ds-confirm")
                        cancel_btn = gr.Button("Cancel", size="sm", elem_id="ds-cancel")
                    with gr.Row(visible=False, elem_id="ds-conflict-row") as conflict_row:
                        conflict_text = gr.Markdown(elem_id="ds-conflict-text")
                        reload_btn = gr.Button("Reload", size="sm", elem_id="ds-conflict-reload")
                        keep_btn = gr.Button("Keep both", size="sm", elem_id="ds-conflict-keep")
                annotator = gr.Textbox(
                    label="Annotator (saved with each annotation)", placeholder="your name", max_lines=1,
                    elem_id="ds-annotator",
                )  # fmt: skip
                with gr.Tabs():
                    with gr.Tab("Measurements", id="measure"):
                        metrics = gr.HTML(h.metrics_html(None), elem_id="ds-metrics")
                    with gr.Tab("Mask", id="mask"):
                        head = gr.Radio(
                            choices=h.candidate_choices(new_session_stub()),
                            value="0",
                            label="Candidate mask (decoder head)",
                            elem_id="ds-head",
                        )
                        tolerance = gr.Slider(
                            0, 5, value=h.DEFAULT_TOLERANCE_PX, step=0.25,
                            label="Outline simplification (px)", elem_id="ds-tolerance",
                        )  # fmt: skip
                    with gr.Tab("Calibration", id="calibration"):
                        cal_text = gr.Markdown("Not calibrated: sizes in pixels only.", elem_id="ds-cal-text")
                        with gr.Row(equal_height=True):
                            mm_px = gr.Number(label="mm per pixel", elem_id="ds-mmpx")
                            set_mm = gr.Button("Set", size="sm", elem_id="ds-set-mmpx")
                        with gr.Row(equal_height=True):
                            ruler_mm = gr.Number(label="Ruler: distance between the 2 points (mm)",
                                                 elem_id="ds-ruler-mm")  # fmt: skip
                            use_ruler = gr.Button("Use ruler", size="sm", elem_id="ds-use-ruler")
                        cal_project = gr.Checkbox(
                            label="For every image of this project (one dermatoscope at contact); "
                            "off: for this image only",
                            elem_id="ds-cal-project",
                        )
                    with gr.Tab("Open & export", id="files"):
                        upload = LocalFile(
                            label="Open an image file (JPEG, PNG, TIFF, BMP)",
                            file_types=list(IMAGE_SUFFIXES),
                            elem_id="ds-upload",
                            height=110,
                        )
                        with gr.Row():
                            export_img = gr.Button("Export this image", size="sm", elem_id="ds-export-image")
                            export_all = gr.Button("Export project", size="sm", elem_id="ds-export-project")
                        downloads = gr.File(label="COCO JSON and PNG masks", file_count="multiple",
                                            elem_id="ds-downloads", interactive=False)  # fmt: skip
        # API-only endpoints: (x, y) prompts for gradio_client (the canvas sends gestures instead).
        with gr.Row(visible=False):
            api_x, api_y, api_x1, api_y1 = (gr.Number() for _ in range(4))
            api_pos = gr.Checkbox(value=True)
            api_click, api_box = gr.Button(), gr.Button()

        # Different browser sessions run in parallel; one session's events run one at a time under its
        # lock (`bound`), which keeps its state consistent.
        one = dict(concurrency_id="session", concurrency_limit=None)
        panel = [lesion_pick, confirm_row, confirm_text, conflict_row, conflict_text]
        opened = [canvas, image_list, summary, metrics, head, cal_text, mm_px, label, *panel]
        measured = [canvas, metrics, head, summary, *panel]  # the summary counts the image in progress at once
        app.load(on_load, [state], opened, api_name="load", **one, show_progress="full")
        # the canvas's progress bar first: Gradio runs a trigger's listeners in the order they were added
        gr.on([image_list.input, prev_btn.click, next_btn.click, upload.upload], None, js=OPENING_JS)
        app.load(lambda: h.remembered_annotator(project), None, [annotator], api_visibility="private", queue=False)
        annotator.blur(on_annotator, [annotator], None, api_visibility="private", queue=False)
        image_list.input(on_pick, [state, image_list], opened, api_name="open_image", **one)
        prev_btn.click(on_step(-1), [state], opened, api_name="previous", **one)
        next_btn.click(on_step(+1), [state], opened, api_name="next", **one)
        upload.upload(on_upload, [state, upload], opened, api_name="upload", **one)

        canvas.gesture(
            on_gesture,
            [state, canvas],
            [canvas],
            api_name="gesture",
            **one,
            show_progress="hidden",
            trigger_mode="multiple",
        ).then(on_measure, [state], measured, **one, show_progress="hidden")
        # after a gesture answered by the fast path; "always_last": the latest mask is always measured
        canvas.measure(on_measure, [state], measured, **one, show_progress="hidden", trigger_mode="always_last")
        api_click.click(on_click_api, [state, api_x, api_y, api_pos], [canvas], api_name="click", **one).then(
            on_measure, [state], measured, **one
        )
        api_box.click(on_box_api, [state, api_x, api_y, api_x1, api_y1], [canvas], api_name="box", **one).then(
            on_measure, [state], measured, **one
        )
        for btn, action, name in ((undo, h.undo_prompt, "undo"), (redo, h.redo_prompt, "redo"),
                                  (clear, h.clear_prompts, "clear")):  # fmt: skip
            btn.click(simple(action), [state], [canvas], api_name=name, **one).then(
                on_measure, [state], measured, **one
            )
        head.input(simple(h.choose_head), [state, head], [canvas], api_name="head", **one).then(
            on_measure, [state], measured, **one
        )
        tolerance.release(simple(h.set_tolerance), [state, tolerance], [canvas], api_name="tolerance", **one).then(
            on_measure, [state], measured, **one
        )
        heatmap.input(on_heatmap, [state, heatmap], [canvas], api_name="heatmap", **one)
        calibrations = ((set_mm, mm_px, h.set_mm_per_px, "mm_per_px"),
                        (use_ruler, ruler_mm, h.calibrate_from_ruler, "ruler"))  # fmt: skip
        for button, field, action, name in calibrations:  # the button, or Enter in its field
            gr.on([button.click, field.submit], on_calibrate(action), [state, field], [canvas, cal_text, metrics],
                  api_name=name, **one)  # fmt: skip
        cal_project.input(on_calibration_scope, [state, cal_project], [cal_text], api_name="calibration_scope", **one)
        saved = [canvas, image_list, summary]
        accept_btn.click(on_accept, [state, label, annotator], saved, api_name="accept", **one).then(
            on_measure, [state], measured, **one
        )
        lesion_events = (
            (new_btn.click, h.new_lesion, [], "new_lesion", False),
            (delete_btn.click, h.delete_lesion, [], "delete_lesion", False),
            (confirm_btn.click, h.confirm_pending, [label, annotator], "confirm", True),
            (cancel_btn.click, h.cancel_pending, [], "cancel", False),
            (reload_btn.click, resolver("reload"), [label, annotator], "conflict_reload", False),
            (keep_btn.click, resolver("keep_both"), [label, annotator], "conflict_keep_both", True),
        )  # fmt: skip
        lesion_pick.input(on_select, [state, lesion_pick], [*saved, label], api_name="select_lesion", **one).then(
            on_measure, [state], measured, **one
        )
        for event, action, inputs, name, toast in lesion_events:
            event(lesion_action(action, toast), [state, *inputs], saved, api_name=name, **one).then(
                on_measure, [state], measured, **one
            )
        labels_text.submit(on_labels, [state, labels_text], [label], api_name="labels", **one)
        export_img.click(on_export_image, [state], [downloads], api_name="export_image", **one)
        export_all.click(on_export_project, [state], [downloads], api_name="export_project", **one)
    app.dermaseg_prefetcher = prefetcher  # type: ignore[attr-defined]
    app.dermaseg_allowed = [views_dir, exports_dir]  # type: ignore[attr-defined]
    app.dermaseg_routes = [gesture_route(channels, answer_gesture)]  # type: ignore[attr-defined]
    return app


class SessionRef:
    """A `gr.State` value: Gradio deep-copies it for each browser session; the copy makes its Session lazily
    (once, even when two of the session's events arrive together)."""

    def __init__(self, make: Callable[[], h.Session]) -> None:
        self.make = make
        self.session: h.Session | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> SessionRef:
        return SessionRef(self.make)

    def get(self) -> h.Session:
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


def new_session_stub() -> Any:
    """A stand-in with no result, for the initial candidate labels."""

    class _Stub:
        result = None

    return _Stub()


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    block: bool = True,
    quiet: bool = False,
    max_file_size: str | int = MAX_UPLOAD,
    login_limits: LoginLimits | None = None,
) -> str:
    """Serve the app offline; returns the local URL (and blocks unless `block` is False).

    Gradio may serve only the page's own folders (display images, exports) and its upload folder;
    the routes that would fetch a URL are refused (`LocalOnly`), and uploads above `max_file_size` too.
    With `auth`, every route needs the login (the gesture route included) and failed logins are slowed
    and limited per client address (`login_limits`, default `LoginLimits()`).
    """
    allowed = [str(p) for p in getattr(app, "dermaseg_allowed", [])]
    for p in allowed:
        Path(p).mkdir(parents=True, exist_ok=True)
    middleware = [Middleware(LocalOnly)]
    login_limits = login_limits or LoginLimits()
    if auth is not None:
        middleware.append(Middleware(LoginThrottle, limits=login_limits))
    app.queue(default_concurrency_limit=1)  # events without their own limit (the page's have one: per-session locks)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=auth,
        auth_message=login_limits.notice() if auth is not None else None,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=quiet,
        allowed_paths=allowed,
        theme=gr.themes.Default(primary_hue="blue", **THEME_FONTS),
        css=(STATIC / "app.css").read_text(encoding="utf-8"),
        footer_links=[],
        run_history=False,  # Gradio would keep inputs (medical images) in the browser's localStorage
        ssr_mode=False,
        enable_monitoring=False,
        max_file_size=max_file_size,
        app_kwargs={"middleware": middleware, "routes": getattr(app, "dermaseg_routes", [])},
    )
    return app.local_url
