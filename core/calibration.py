"""Physical scale of an image: millimetres per pixel, and where that figure came from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from dermaseg.core.errors import CalibrationError

# "project": the project's scale for every image without one of its own (one dermatoscope at contact).
CalibrationSource = Literal["user", "metadata", "ruler", "project"]


@dataclass(frozen=True)
class Calibration:
    """Square pixels of `mm_per_px` millimetres; `source` says who said so."""

    mm_per_px: float
    source: CalibrationSource = "user"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mm_per_px) and self.mm_per_px > 0):
            raise CalibrationError(f"mm per pixel must be a positive number, got {self.mm_per_px!r}")

    @classmethod
    def from_ruler(cls, p0: tuple[float, float], p1: tuple[float, float], distance_mm: float) -> Calibration:
        """Two points (x, y) in image pixels that lie `distance_mm` apart on a ruler in the image."""
        if not (math.isfinite(distance_mm) and distance_mm > 0):
            raise CalibrationError(f"the ruler distance must be a positive number of mm, got {distance_mm!r}")
        coords = (*p0, *p1)
        if not all(math.isfinite(c) for c in coords):
            raise CalibrationError("ruler points must be finite pixel coordinates")
        px = math.dist(p0, p1)
        if px < 2:
            raise CalibrationError("the two ruler points are less than 2 pixels apart: click both ends")
        return cls(distance_mm / px, "ruler")

    @classmethod
    def from_dpi(cls, dpi: float) -> Calibration:
        """Resolution stored in the file, in pixels per inch."""
        return cls(25.4 / dpi, "metadata")
