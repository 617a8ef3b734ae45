"""What the user asked for: a box and/or clicks, in image pixels (x, y)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dermaseg.core.errors import PromptError

MAX_POINTS = 64
POSITIVE, NEGATIVE = 1, 0

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, edges of the image at 0 and W/H
Point = tuple[float, float]  # x, y in pixels


@dataclass(frozen=True)
class Prompts:
    """A box (optional) and clicks with labels 1 (positive) / 0 (negative), in image pixels (x, y)."""

    box: Box | None = None
    points: tuple[Point, ...] = field(default=())
    labels: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise PromptError(f"{len(self.points)} points but {len(self.labels)} labels")
        if any(lbl not in (POSITIVE, NEGATIVE) for lbl in self.labels):
            raise PromptError("point labels must be 1 (positive) or 0 (negative)")

    @property
    def is_empty(self) -> bool:
        return self.box is None and not self.points

    def with_point(self, x: float, y: float, positive: bool = True) -> Prompts:
        return Prompts(self.box, (*self.points, (x, y)), (*self.labels, POSITIVE if positive else NEGATIVE))

    def with_box(self, box: Box | None) -> Prompts:
        return Prompts(box, self.points, self.labels)

    def validated(self, width: int, height: int) -> Prompts:
        """Check against an image of `width` x `height` px; clip a box that pokes out of it.

        Raises PromptError for NaN/inf, points outside the image, a box with no area inside the
        image, more than MAX_POINTS clicks, or no prompt at all.
        """
        if self.is_empty:
            raise PromptError("draw a box or click on the lesion first")
        if len(self.points) > MAX_POINTS:
            raise PromptError(
                f"{len(self.points)} clicks is too many (at most {MAX_POINTS}); clear and start again"
            )
        for i, (x, y) in enumerate(self.points):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise PromptError(f"click {i + 1} has a non-finite coordinate ({x}, {y})")
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(
                    f"click {i + 1} at ({x:.0f}, {y:.0f}) is outside the {width}x{height} image"
                )
        box = self.box
        if box is not None:
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise PromptError(f"the box must be four finite numbers x0, y0, x1, y1, got {box!r}")
            x0, x1 = sorted((box[0], box[2]))
            y0, y1 = sorted((box[1], box[3]))
            x0, x1 = max(0.0, x0), min(float(width), x1)
            y0, y1 = max(0.0, y0), min(float(height), y1)
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise PromptError("the box has no area inside the image; drag a box around the lesion")
            box = (float(x0), float(y0), float(x1), float(y1))
        points = tuple((float(x), float(y)) for x, y in self.points)
        return Prompts(box, points, tuple(int(v) for v in self.labels))
