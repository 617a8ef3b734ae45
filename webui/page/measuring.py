"""The scale (mm per pixel, typed or from a ruler on the image) and the measurements of the current mask."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dermaseg.core.annotation.metrics import LesionMetrics, measure
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import DermasegError

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


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
        s.metrics = measure(s.mask, s.work_rgb, s.image.calibration, s.pixel_size)
    where = "every image of the project without its own scale" if s.calibrate_project else image.name
    s.message = f"calibration: {cal.mm_per_px:.5f} mm per pixel for {where}"


def measurements(s: Session) -> LesionMetrics | None:
    """Measurements of the current mask (cached until the mask or calibration changes).

    The measuring itself (~30 ms on a PH2 image) runs outside the session's lock, on the mask and image read under it,
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
