"""The annotation canvas: the image with an SVG overlay (outline, prompts, ruler, axes, heatmap).

A `gr.HTML` subclass with a small hand-written JS/SVG editor (`static/canvas.js`, no npm build). The
image stays put in the browser; each gesture is a small JSON ("kind": "gesture") POSTed to the server's
fast path (`gesture_route`), which answers with a JSON view ("kind": "view") that the script draws; the
custom event "measure" then brings the measurements. Should the fast path refuse, the gesture goes
through the component's value and the custom event "gesture" instead. See `page.gestures.handle_gesture`
and `page.views.view`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

STATIC = Path(__file__).parent / "static"

TEMPLATE = """
<div class="ds-canvas" tabindex="-1">
  <div class="ds-toolbar" role="toolbar" aria-label="Canvas tools">
    <span class="ds-tools">
    <button type="button" data-mode="select" title="Select a saved lesion: click inside it (V)">➤ Select</button>
    <button type="button" data-mode="box" title="Drag a box around the lesion (B)">▭ Box</button>
    <button type="button" data-mode="pos" title="Click on the lesion (C)">+ Lesion</button>
    <button type="button" data-mode="neg" title="Click on skin that is not lesion (X, or Alt/Shift-click)">
      − Not lesion</button>
    <button type="button" data-mode="edit" title="Drag a vertex (its neighbours follow; Alt: the vertex alone);
double-click an edge to insert; Shift-click a vertex to delete (E)">✎ Edit outline</button>
    <button type="button" data-mode="brush" title="Paint lesion (D; Alt-drag erases; [ and ] size)">● Brush</button>
    <button type="button" data-mode="erase" title="Erase lesion (Shift+D; [ and ] size)">○ Eraser</button>
    <button type="button" data-mode="ruler" title="Click both ends of a known distance on a ruler (R)">
      ⟷ Ruler</button>
    </span>
    <span class="ds-controls">
    <label class="ds-range" title="Brush and eraser diameter, in screen pixels ([ and ])">Size
      <input type="range" class="ds-brush-size" min="2" max="160" step="1" value="24" aria-label="Brush size">
      <output class="ds-brush-out">24</output></label>
    <label class="ds-range" title="Opacity of the mask's fill; 0 % shows the outline only (O toggles)">Fill
      <input type="range" class="ds-fill" min="0" max="100" step="5" value="25" aria-label="Fill opacity">
      <output class="ds-fill-out">25%</output></label>
    <button type="button" data-view="fit" title="Fit the image in the view (F or 0)">Fit</button>
    <button type="button" data-view="one" title="One image pixel per screen pixel (1)">1:1</button>
    <output class="ds-zoom" title="Zoom: wheel or pinch; pan: drag with Space held or the middle button">100%</output>
    </span>
  </div>
  <div class="ds-stage">
    <div class="ds-empty">Open an image: choose one from the project list, or upload one.</div>
    <div class="ds-loading" role="progressbar" aria-label="Opening the image" hidden>
      <div class="ds-loading-box"><span class="ds-loading-text">Opening the image…</span>
      <span class="ds-loading-bar"><span></span></span></div>
    </div>
  </div>
  <div class="ds-statusbar"><span class="ds-status" aria-live="polite"></span></div>
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
