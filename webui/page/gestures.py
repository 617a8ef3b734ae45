"""Gestures from the canvas (a box, a click, an edited outline, a stroke, ...) dispatched to the actions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from dermaseg.core.errors import DermasegError
from dermaseg.webui.gesture_route import MAX_DEPTH, nesting_depth
from dermaseg.webui.page.edits import edit_polygons
from dermaseg.webui.page.lesions import new_lesion, select_lesion
from dermaseg.webui.page.measuring import ruler_point
from dermaseg.webui.page.paint import paint
from dermaseg.webui.page.prompts import prompt_box, prompt_click

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


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
