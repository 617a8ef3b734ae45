"""What the page shows: the canvas's view (JSON), the measurements panel (HTML) and the side panel's texts.

The view's JSON shape is what `static/canvas.js` draws; keep its keys.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dermaseg.core.annotation.metrics import DECISION_AID_NOTICE, LesionMetrics
from dermaseg.core.annotation.project import Project
from dermaseg.core.image import LesionImage
from dermaseg.core.segment.preprocess import Transform
from dermaseg.core.segment.segmenter import MaskResult
from dermaseg.webui.page.lesions import lesions
from dermaseg.webui.page.uploads import shown_path, write_atomically

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session

DISPLAY_MAX_SIDE = 2048  # px; larger images are shown downscaled (prompts stay in full-res pixels)
STATUS_ICONS = {"not_started": "○", "in_progress": "◐", "done": "●"}


def gallery_choices(project: Project) -> list[tuple[str, int]]:
    """(label, image id) for every project image, label = status icon + path."""
    records = project.images()
    shown = [shown_path(r.path) for r in records]
    twice = {p for p in shown if shown.count(p) > 1}  # same file name uploaded twice: tell them apart
    return [
        (f"{STATUS_ICONS.get(r.status, '?')} {p}" + (f" · {r.path.split('/')[1]}" if p in twice else ""), r.id)
        for r, p in zip(records, shown, strict=True)
    ]


def progress_summary(project: Project) -> str:
    s = project.summary()["by_status"]
    total = sum(s.values())
    return f"{s['done']} of {total} done · {s['in_progress']} in progress · {s['not_started']} not started"


def candidate_choices(s: Session) -> list[tuple[str, str]]:
    """Radio choices: each decoder head with its predicted IoU (when a result exists), plus best."""
    scores = s.result.head_scores if s.result else ()
    names = ["0 · Med-SAM (default)", "1", "2", "3"]
    out = [(f"{n} · IoU {scores[i]:.2f}" if scores else n, str(i)) for i, n in enumerate(names)]
    return [*out, ("best predicted IoU", "best")]


def calibration_text(s: Session) -> str:
    cal = s.image.calibration if s.image else None
    if cal is None:
        return "Not calibrated: sizes in pixels only."
    source = "the project's scale" if cal.source == "project" else f"this image's, {cal.source}"
    return f"{cal.mm_per_px:.5f} mm/px ({source}); {1 / cal.mm_per_px:.1f} px per mm"


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
