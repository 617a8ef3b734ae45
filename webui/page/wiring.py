"""Wiring: the page's components connected to the `Events` handlers, with the api names the page calls.

Different browser sessions run in parallel; one session's events run one at a time under its lock
(`events.bound`), which keeps its state consistent. After an event that changes the mask, a second one
(`on_measure`) brings the measurements.
"""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr

from dermaseg.webui.page.edits import set_tolerance
from dermaseg.webui.page.events import Events, bound
from dermaseg.webui.page.layout import Page
from dermaseg.webui.page.lesions import new_lesion
from dermaseg.webui.page.measuring import calibrate_from_ruler, set_mm_per_px
from dermaseg.webui.page.prompts import choose_head, clear_prompts
from dermaseg.webui.page.saving import cancel_pending, confirm_pending, delete_lesion
from dermaseg.webui.page.team import wire_team
from dermaseg.webui.page.undo import redo_prompt, undo_prompt

OPENING_JS = "() => { window.__dsOpening && window.__dsOpening(); }"  # the canvas's progress bar (canvas.js)
SHOW_EDITOR_JS = "() => { document.getElementById('ds-canvas')?.scrollIntoView({block: 'start'}); }"
ONE = dict(concurrency_id="session", concurrency_limit=None)  # per-session locks do the limiting


def wire(app: gr.Blocks, page: Page, state: gr.State, ev: Events) -> None:
    """Connect every event of the page."""
    _opening(app, page, state, ev)
    _canvas(page, state, ev)
    _calibration(page, state, ev)
    _lesions(page, state, ev)
    _exports(page, state, ev)
    _agreement(page, state, ev)
    wire_team(app, page.team, _opened(page), state, ev)


def _lesion_panel(p: Page) -> list[Any]:
    return [p.lesion_pick, p.confirm_row, p.confirm_text, p.conflict_row, p.conflict_text]


def _opened(p: Page) -> list[Any]:
    """What opening an image updates."""
    return [p.canvas, p.image_list, p.summary, p.metrics, p.head, p.cal_text, p.mm_px, p.label, *_lesion_panel(p)]


def _measured(p: Page) -> list[Any]:
    """What the measurements update (the summary counts the image in progress at once)."""
    return [p.canvas, p.metrics, p.head, p.summary, *_lesion_panel(p)]


def _then_measure(event: Any, p: Page, state: gr.State, ev: Events, **kw: Any) -> None:
    event.then(functools.partial(bound, lock=False)(ev.on_measure), [state], _measured(p), **ONE, **kw)


def _opening(app: gr.Blocks, p: Page, state: gr.State, ev: Events) -> None:
    opened = _opened(p)
    app.load(bound(ev.on_load), [state], opened, api_name="load", **ONE, show_progress="full")
    # the canvas's progress bar first: Gradio runs a trigger's listeners in the order they were added
    gr.on([p.image_list.input, p.prev_btn.click, p.next_btn.click, p.upload.upload], None, js=OPENING_JS)
    app.load(ev.on_who, None, [p.annotator], api_visibility="private", queue=False)
    p.annotator.blur(ev.on_annotator, [p.annotator], None, api_visibility="private", queue=False)
    p.image_list.input(bound(ev.on_pick), [state, p.image_list], opened, api_name="open_image", **ONE)
    p.prev_btn.click(bound(ev.on_step(-1)), [state], opened, api_name="previous", **ONE)
    p.next_btn.click(bound(ev.on_step(+1)), [state], opened, api_name="next", **ONE)
    p.upload.upload(bound(ev.on_upload), [state, p.upload], opened, api_name="upload", **ONE)


def _canvas(p: Page, state: gr.State, ev: Events) -> None:
    measure = functools.partial(bound, lock=False)(ev.on_measure)
    gesture = p.canvas.gesture(
        bound(ev.on_gesture), [state, p.canvas], [p.canvas], api_name="gesture", **ONE,
        show_progress="hidden", trigger_mode="multiple",
    )  # fmt: skip
    _then_measure(gesture, p, state, ev, show_progress="hidden")
    # after a gesture answered by the fast path; "always_last": the latest mask is always measured
    p.canvas.measure(measure, [state], _measured(p), **ONE, show_progress="hidden", trigger_mode="always_last")
    # API-only endpoints: (x, y) prompts for gradio_client (the canvas sends gestures instead)
    click = [state, p.api_x, p.api_y, p.api_pos]
    _then_measure(p.api_click.click(bound(ev.on_click_api), click, [p.canvas], api_name="click", **ONE), p, state, ev)
    box = [state, p.api_x, p.api_y, p.api_x1, p.api_y1]
    _then_measure(p.api_box.click(bound(ev.on_box_api), box, [p.canvas], api_name="box", **ONE), p, state, ev)
    for btn, action, name in ((p.undo, undo_prompt, "undo"), (p.redo, redo_prompt, "redo"),
                              (p.clear, clear_prompts, "clear")):  # fmt: skip
        _then_measure(btn.click(bound(ev.simple(action)), [state], [p.canvas], api_name=name, **ONE), p, state, ev)
    head = p.head.input(bound(ev.simple(choose_head)), [state, p.head], [p.canvas], api_name="head", **ONE)
    _then_measure(head, p, state, ev)
    tolerance = p.tolerance.release(
        bound(ev.simple(set_tolerance)), [state, p.tolerance], [p.canvas], api_name="tolerance", **ONE
    )
    _then_measure(tolerance, p, state, ev)
    p.heatmap.input(bound(ev.on_heatmap), [state, p.heatmap], [p.canvas], api_name="heatmap", **ONE)


def _calibration(p: Page, state: gr.State, ev: Events) -> None:
    calibrations = ((p.set_mm, p.mm_px, set_mm_per_px, "mm_per_px"),
                    (p.use_ruler, p.ruler_mm, calibrate_from_ruler, "ruler"))  # fmt: skip
    for button, field, action, name in calibrations:  # the button, or Enter in its field
        gr.on([button.click, field.submit], bound(ev.on_calibrate(action)), [state, field],
              [p.canvas, p.cal_text, p.metrics], api_name=name, **ONE)  # fmt: skip
    p.cal_project.input(
        bound(ev.on_calibration_scope), [state, p.cal_project], [p.cal_text], api_name="calibration_scope", **ONE
    )


def _lesions(p: Page, state: gr.State, ev: Events) -> None:
    saved = [p.canvas, p.image_list, p.summary]
    who = [p.label, p.annotator]
    accepted = p.accept_btn.click(bound(ev.on_accept), [state, *who], saved, api_name="accept", **ONE)
    _then_measure(accepted, p, state, ev)
    lesion_events = (  # the ones that save name the annotator (`Events.saving`)
        (p.new_btn.click, ev.lesion_action(new_lesion), [], "new_lesion"),
        (p.delete_btn.click, ev.lesion_action(delete_lesion), [], "delete_lesion"),
        (p.confirm_btn.click, ev.saving(confirm_pending), who, "confirm"),
        (p.cancel_btn.click, ev.lesion_action(cancel_pending), [], "cancel"),
        (p.reload_btn.click, ev.lesion_action(ev.resolver("reload")), who, "conflict_reload"),
        (p.keep_btn.click, ev.saving(ev.resolver("keep_both")), who, "conflict_keep_both"),
    )
    picked = p.lesion_pick.input(
        bound(ev.on_select), [state, p.lesion_pick], [*saved, p.label], api_name="select_lesion", **ONE
    )
    _then_measure(picked, p, state, ev)
    for event, handler, inputs, name in lesion_events:
        done = event(bound(handler), [state, *inputs], saved, api_name=name, **ONE)
        _then_measure(done, p, state, ev)
    p.labels_text.submit(bound(ev.on_labels), [state, p.labels_text], [p.label], api_name="labels", **ONE)


def _exports(p: Page, state: gr.State, ev: Events) -> None:
    p.export_img.click(bound(ev.on_export_image), [state], [p.downloads], api_name="export_image", **ONE)
    p.export_all.click(bound(ev.on_export_project), [state], [p.downloads], api_name="export_project", **ONE)


def _agreement(p: Page, state: gr.State, ev: Events) -> None:
    # one computation at a time (it reads every image with 2+ raters); no session lock: editing goes on
    p.agree_btn.click(
        ev.on_agreement, None, [p.agree_summary, p.agree_plot, p.agree_table], api_name="agreement",
        concurrency_id="agreement", concurrency_limit=1,
    )  # fmt: skip
    opened = _opened(p)
    p.agree_table.select(None, None, js=OPENING_JS)
    p.agree_table.select(bound(ev.on_agreement_row), [state], opened, api_visibility="private", **ONE).then(
        None, js=SHOW_EDITOR_JS
    )
