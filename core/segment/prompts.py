"""What the user asked for: a box and/or clicks, in image pixels (x, y)."""

from __future__ import annotations

import math
import numbers
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
        try:
            n_points, n_labels = len(self.points), len(self.labels)
        except TypeError:
            raise PromptError("points and labels must be sequences (x, y) pairs and 0/1 labels") from None
        if n_points != n_labels:
            raise PromptError(f"{n_points} points but {n_labels} labels")
        if any(not isinstance(lbl, numbers.Real) or lbl not in (POSITIVE, NEGATIVE) for lbl in self.labels):
            raise PromptError("point labels must be 1 (positive) or 0 (negative)")

    @property
    def is_empty(self) -> bool:
        return self.box is None and not self.points

    def with_point(self, x: float, y: float, positive: bool = True) -> Prompts:
        return Prompts(self.box, (*self.points, (x, y)), (*self.labels, POSITIVE if positive else NEGATIVE))

    def with_box(self, box: Box | None) -> Prompts:
        return Prompts(box, self.points, self.labels)

    def mirrored(self, width: float) -> Prompts:
        """The same prompts on the image flipped left-right (`width`: the image's, px)."""
        box = None if self.box is None else (width - self.box[2], self.box[1], width - self.box[0], self.box[3])
        return Prompts(box, tuple((width - x, y) for x, y in self.points), self.labels)

    def scaled(self, fx: float, fy: float) -> Prompts:
        """The same prompts on the image resized by `fx` along x and `fy` along y (a smaller grid over it)."""
        box = None if self.box is None else (self.box[0] * fx, self.box[1] * fy, self.box[2] * fx, self.box[3] * fy)
        return Prompts(box, tuple((x * fx, y * fy) for x, y in self.points), self.labels)

    def validated(self, width: int, height: int) -> Prompts:
        """Check against an image of `width` x `height` px; clip a box that pokes out of it.

        Raises PromptError for NaN/inf, points outside the image, a box with no area inside the
        image, more than MAX_POINTS clicks, or no prompt at all.
        """
        if self.is_empty:
            raise PromptError("draw a box or click on the lesion first")
        if len(self.points) > MAX_POINTS:
            raise PromptError(f"{len(self.points)} clicks is too many (at most {MAX_POINTS}); clear and start again")
        points = []
        for i, pt in enumerate(self.points):
            xy = _numbers(pt, 2)
            if xy is None:
                raise PromptError(f"click {i + 1} must be two numbers (x, y), got {pt!r:.60}")
            x, y = xy
            if not (math.isfinite(x) and math.isfinite(y)):
                raise PromptError(f"click {i + 1} has a non-finite coordinate ({x}, {y})")
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(f"click {i + 1} at ({x:.0f}, {y:.0f}) is outside the {width}x{height} image")
            points.append((x, y))
        box = None
        if self.box is not None:
            box = _numbers(self.box, 4)
            if box is None or not all(math.isfinite(v) for v in box):
                raise PromptError(f"the box must be four finite numbers x0, y0, x1, y1, got {self.box!r:.80}")
            x0, x1 = sorted((box[0], box[2]))
            y0, y1 = sorted((box[1], box[3]))
            x0, x1 = max(0.0, x0), min(float(width), x1)
            y0, y1 = max(0.0, y0), min(float(height), y1)
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise PromptError("the box has no area inside the image; drag a box around the lesion")
            box = (float(x0), float(y0), float(x1), float(y1))
        return Prompts(box, tuple(points), tuple(int(v) for v in self.labels))


def _number(v: object) -> float | None:
    """`v` as a float (+-inf when too large for one), or None when it is not a real number."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    try:
        return float(v)
    except OverflowError:  # an int beyond float range: as unusable as infinity
        return math.inf if v > 0 else -math.inf
    except (TypeError, ValueError):
        return None


def _numbers(values: object, n: int) -> tuple[float, ...] | None:
    """A sequence of exactly `n` real numbers as floats, else None (wrong type or length)."""
    if isinstance(values, (str, bytes)):
        return None
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        return None
    out = [_number(v) for v in items]
    if len(out) != n or any(v is None for v in out):
        return None
    return tuple(out)  # type: ignore[arg-type]
