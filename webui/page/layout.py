"""The page's layout: the Gradio components (canvas, image list, lesion panel, tabs), no behaviour.

`lay_out(project)`, called inside a `gr.Blocks`, makes the components and returns them as a `Page`;
`wiring.wire` connects them to the `events` handlers. The elem_ids are what `static/` and the browser tests use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from dermaseg.core.annotation.project import Project
from dermaseg.core.image import IMAGE_SUFFIXES
from dermaseg.webui.canvas import Canvas
from dermaseg.webui.page.agreement import empty_view
from dermaseg.webui.page.session import OUTLINE_SIMPLIFICATION_PX
from dermaseg.webui.page.team import TeamPanel, lay_out_team
from dermaseg.webui.page.views import candidate_choices, gallery_choices, metrics_html, progress_summary

SHORTCUTS = (
    "Shortcuts: B box · C lesion click · X not-lesion click (or Alt/Shift-click) · E edit outline · "
    "D brush · Shift+D eraser · [ ] brush size · V select a saved lesion · R ruler · O outline only · "
    "wheel / pinch zoom · Space-drag or middle-drag pan · F fit · 1 one to one · "
    "Ctrl+Z / Ctrl+Shift+Z undo / redo · Esc clear · A accept · ← / → previous / next image"
)


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


@dataclass(frozen=True)
class Page:
    """The page's components that events read or update (names as on the page)."""

    summary: gr.Markdown
    canvas: Canvas
    undo: gr.Button
    redo: gr.Button
    clear: gr.Button
    heatmap: gr.Checkbox
    image_list: gr.Dropdown
    prev_btn: gr.Button
    next_btn: gr.Button
    label: gr.Dropdown
    accept_btn: gr.Button
    labels_text: gr.Textbox
    lesion_pick: gr.Radio
    new_btn: gr.Button
    delete_btn: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm_btn: gr.Button
    cancel_btn: gr.Button
    conflict_row: gr.Row
    conflict_text: gr.Markdown
    reload_btn: gr.Button
    keep_btn: gr.Button
    annotator: gr.Textbox
    metrics: gr.HTML
    head: gr.Radio
    tolerance: gr.Slider
    cal_text: gr.Markdown
    mm_px: gr.Number
    set_mm: gr.Button
    ruler_mm: gr.Number
    use_ruler: gr.Button
    cal_project: gr.Checkbox
    upload: LocalFile
    export_img: gr.Button
    export_all: gr.Button
    downloads: gr.File
    api_x: gr.Number
    api_y: gr.Number
    api_x1: gr.Number
    api_y1: gr.Number
    api_pos: gr.Checkbox
    api_click: gr.Button
    api_box: gr.Button
    agree_btn: gr.Button
    agree_summary: gr.Markdown
    agree_plot: gr.BarPlot
    agree_table: gr.Dataframe
    team: TeamPanel


class _NoResult:
    """A stand-in session with no result, for the initial candidate labels."""

    result = None


def lay_out(project: Project, logins: bool = False) -> Page:
    """Make the page's components (inside a `gr.Blocks`) for `project`; with `logins` (a project with users)
    the annotator field shows who is logged in instead of taking a name."""
    header = _header(project)
    with gr.Row(elem_id="ds-main"):
        canvas = _canvas_column()
        with gr.Column(scale=2, min_width=380, elem_id="ds-side"):
            team = lay_out_team(logins)
            side = {**_images(project), **_labels(project), **_lesion_panel(), **_tabs(logins)}
    return Page(**header, **canvas, **side, **_api(), **_agreement(), team=team)


def _header(project: Project) -> dict[str, gr.Component]:
    """The title row and the progress summary."""
    with gr.Row(elem_id="ds-header", equal_height=True):
        gr.Markdown("### dermaseg · skin lesion annotation", elem_id="ds-title")
        summary = gr.Markdown(progress_summary(project), elem_id="ds-summary")
    return dict(summary=summary)


def _canvas_column() -> dict[str, gr.Component]:
    """The canvas, the prompt tools under it and the shortcuts."""
    with gr.Column(scale=3, min_width=600):
        canvas = Canvas(elem_id="ds-canvas")
        with gr.Row(elem_id="ds-prompt-tools"):
            undo = gr.Button("↶ Undo", size="sm", elem_id="ds-undo")
            redo = gr.Button("↷ Redo", size="sm", elem_id="ds-redo")
            clear = gr.Button("✕ Clear prompts", size="sm", elem_id="ds-clear")
            heatmap = gr.Checkbox(label="Probability heatmap", value=False, elem_id="ds-heatmap")
        gr.Markdown(SHORTCUTS, elem_id="ds-shortcuts")
    return dict(canvas=canvas, undo=undo, redo=redo, clear=clear, heatmap=heatmap)


def _images(project: Project) -> dict[str, gr.Component]:
    """The project's image list, previous and next."""
    with gr.Group():
        image_list = gr.Dropdown(
            choices=gallery_choices(project),
            label=f"Images in {project.root.name}{f' (shared on {project.where})' if project.shared else ''}"
            "  (○ not started · ◐ in progress · ● done)",
            elem_id="ds-images",
            interactive=True,
        )
        with gr.Row():
            prev_btn = gr.Button("← Previous", size="sm", elem_id="ds-prev")
            next_btn = gr.Button("Next →", size="sm", elem_id="ds-next")
    return dict(image_list=image_list, prev_btn=prev_btn, next_btn=next_btn)


def _labels(project: Project) -> dict[str, gr.Component]:
    """The label picker, Accept, and the label classes."""
    with gr.Group():
        with gr.Row(equal_height=True):
            label = gr.Dropdown(choices=list(project.labels()), label="Label", scale=2, elem_id="ds-label")
            accept_btn = gr.Button("✓ Accept & save", variant="primary", scale=1, elem_id="ds-accept")
        labels_text = gr.Textbox(
            value=", ".join(project.labels()), label="Label classes (comma-separated; Enter saves)",
            max_lines=1, elem_id="ds-labels",
        )  # fmt: skip
    return dict(label=label, accept_btn=accept_btn, labels_text=labels_text)


def _lesion_panel() -> dict[str, gr.Component]:
    """The image's saved lesions, new and delete, and the confirm and conflict rows."""
    with gr.Group(elem_id="ds-lesion-panel"):
        lesion_pick = gr.Radio(choices=[], label="Lesions on this image (select one to edit it)", elem_id="ds-lesions")
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
    return dict(
        lesion_pick=lesion_pick,
        new_btn=new_btn,
        delete_btn=delete_btn,
        confirm_text=confirm_text,
        confirm_btn=confirm_btn,
        cancel_btn=cancel_btn,
        conflict_text=conflict_text,
        reload_btn=reload_btn,
        keep_btn=keep_btn,
        confirm_row=confirm_row,
        conflict_row=conflict_row,
    )


def _tabs(logins: bool) -> dict[str, gr.Component]:
    """The annotator (typed, or the logged-in user), and the tabs: measurements, mask, calibration, files."""
    if logins:  # filled at page load from the login; what a client sends back in it is never used
        with gr.Row(equal_height=False):
            annotator = gr.Textbox(
                label="Logged in as (named in each annotation you save)", max_lines=1, interactive=False,
                elem_id="ds-annotator", scale=5,
            )  # fmt: skip
            # Gradio's own route; all_session=false: this browser only, the user's other sessions stay
            gr.Button("Log out", link="logout?all_session=false", size="sm", elem_id="ds-logout", scale=1)
    else:
        annotator = gr.Textbox(
            label="Annotator (saved with each annotation)", placeholder="your name", max_lines=1,
            elem_id="ds-annotator",
        )  # fmt: skip
    with gr.Tabs():
        with gr.Tab("Measurements", id="measure"):
            metrics = gr.HTML(metrics_html(None), elem_id="ds-metrics")
        with gr.Tab("Mask", id="mask"):
            head = gr.Radio(
                choices=candidate_choices(_NoResult()),
                value="0",
                label="Candidate mask (decoder head)",
                elem_id="ds-head",
            )
            tolerance = gr.Slider(
                0, 5, value=OUTLINE_SIMPLIFICATION_PX, step=0.25,
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
                label="For every image of this project (one dermatoscope at contact); off: for this image only",
                elem_id="ds-cal-project",
            )
        with gr.Tab("Open & export", id="files"):
            upload = LocalFile(
                label="Open an image file (JPEG, PNG, TIFF, BMP)",
                file_types=sorted(IMAGE_SUFFIXES),  # what a project scans
                elem_id="ds-upload",
                height=110,
            )
            with gr.Row():
                export_img = gr.Button("Export this image", size="sm", elem_id="ds-export-image")
                export_all = gr.Button("Export project", size="sm", elem_id="ds-export-project")
            downloads = gr.File(label="COCO JSON and PNG masks", file_count="multiple",
                                elem_id="ds-downloads", interactive=False)  # fmt: skip
    return dict(
        annotator=annotator,
        metrics=metrics,
        head=head,
        tolerance=tolerance,
        cal_text=cal_text,
        mm_px=mm_px,
        set_mm=set_mm,
        ruler_mm=ruler_mm,
        use_ruler=use_ruler,
        cal_project=cal_project,
        upload=upload,
        export_img=export_img,
        export_all=export_all,
        downloads=downloads,
    )


def _agreement() -> dict[str, gr.Component]:
    """Agreement between raters, under the editor at full width (the table is wide): computed on demand."""
    with gr.Accordion("Agreement between raters", open=False, elem_id="ds-agreement"):
        with gr.Row():
            agree_summary = gr.Markdown(empty_view().summary, elem_id="ds-agree-summary")
            agree_btn = gr.Button("Compute agreement", size="sm", scale=0, min_width=180, elem_id="ds-agree-compute")
        # no value yet: a plot made with an empty frame ignored a later value sent with y_lim (Gradio 6.31)
        agree_plot = gr.BarPlot(
            None, x="image", y="mean Dice", sort="y", tooltip="all", x_label_angle=-40,
            title="Mean Dice between raters per image (lowest first; 1 = the same pixels)",
            height=320, elem_id="ds-agree-plot",
        )  # fmt: skip
        agree_table = gr.Dataframe(
            empty_view().table, label="Pairs of raters, most disagreement first (select a row to open the image)",
            interactive=False, max_height=420, wrap=True, elem_id="ds-agree-table",
        )  # fmt: skip
    return dict(agree_btn=agree_btn, agree_summary=agree_summary, agree_plot=agree_plot, agree_table=agree_table)


def _api() -> dict[str, gr.Component]:
    """API-only endpoints: (x, y) prompts for gradio_client (the canvas sends gestures instead)."""
    with gr.Row(visible=False):
        api_x, api_y, api_x1, api_y1 = (gr.Number() for _ in range(4))
        api_pos = gr.Checkbox(value=True)
        api_click, api_box = gr.Button(), gr.Button()
    return dict(
        api_x=api_x, api_y=api_y, api_x1=api_x1, api_y1=api_y1, api_pos=api_pos, api_click=api_click, api_box=api_box
    )
