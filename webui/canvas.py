"""The annotation canvas: the image with an SVG overlay (outline, prompts, ruler, axes, heatmap).

A `gr.HTML` subclass with a small hand-written JS/SVG editor (`static/canvas.js`, no npm build). The
image stays put in the browser; each gesture is a small JSON ("kind": "gesture") POSTed to the server's
fast path (`gesture_route`), which answers with a JSON view ("kind": "view") that the script draws; the
custom event "measure" then brings the measurements. Should the fast path refuse, the gesture goes
through the component's value and the custom event "gesture" instead. See `handlers.handle_gesture`
and `handlers.view`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

STATIC = Path(__file__).parent / "static"

TEMPLATE = """
<div class="ds-canvas" tabindex="-1">
  <div class="ds-toolbar" role="toolbar" aria-label="Canvas tools">
    <button type="button" data-mode="box" title="Drag a box around the lesion (B)">▭ Box</button>
    <button type="button" data-mode="pos" title="Click on the lesion (C)">+ Lesion</button>
    <button type="button" data-mode="neg" title="Click on skin that is not lesion (X, or Alt/Shift-click)">
      − Not lesion</button>
    <button type="button" data-mode="edit"
      title="Drag a vertex; double-click an edge to insert; Shift-click a vertex to delete (E)">✎ Edit outline</button>
    <button type="button" data-mode="ruler" title="Click both ends of a known distance on a ruler (R)">
      ⟷ Ruler</button>
    <span class="ds-status" aria-live="polite"></span>
  </div>
  <div class="ds-stage">
    <div class="ds-empty">Open an image: choose one from the project list, or upload one.</div>
  </div>
</div>
"""


class Canvas(gr.HTML):
    """The image and its editable overlay. Value: a JSON string (a view from the server, a gesture back)."""

    def __init__(self, value: str = '{"kind":"view","ack":0}', **kwargs: Any) -> None:
        super().__init__(
            value=value,
            html_template=TEMPLATE,
            css_template=(STATIC / "canvas.css").read_text(encoding="utf-8"),
            js_on_load=(STATIC / "canvas.js").read_text(encoding="utf-8"),
            apply_default_css=False,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "string", "description": "JSON: a gesture in, a view out"}
