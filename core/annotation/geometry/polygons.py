"""Lesion outlines as polygons: the `Polygon` / `Polygons` types, their JSON form, area, box and SVG path.

Coordinates are (x, y) image pixels with pixel edges at integers: pixel (row r, col c) covers
x in [c, c + 1] and y in [r, r + 1], so its centre is (c + 0.5, r + 0.5).

Ring orientation: an exterior has a positive shoelace area computed on the raw (x, y) numbers
(clockwise on screen, where y points down), a hole a negative one; rings are stored open (the first
vertex is not repeated at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry import Polygon as ShapelyPolygon

from dermaseg.core.errors import GeometryError

Point = tuple[float, float]
Ring = tuple[Point, ...]


@dataclass(frozen=True)
class Polygon:
    """One connected part: an exterior ring and zero or more hole rings, (x, y) pixels, open rings."""

    exterior: Ring
    holes: tuple[Ring, ...] = ()

    def to_shapely(self) -> ShapelyPolygon:
        return ShapelyPolygon(self.exterior, self.holes)


@dataclass(frozen=True)
class Polygons:
    """All parts of one lesion outline on a `width` x `height` pixel image."""

    parts: tuple[Polygon, ...]
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict: {"width", "height", "parts": [{"exterior": [[x, y], ...], "holes": [...]}]}."""
        return {
            "width": int(self.width),
            "height": int(self.height),
            "parts": [
                {"exterior": _ring_to_json(p.exterior), "holes": [_ring_to_json(h) for h in p.holes]}
                for p in self.parts
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Polygons:
        """Inverse of `to_json`. Checks structure only (numbers, pairs); use `repair_polygons` to validate."""
        try:
            width, height = int(data["width"]), int(data["height"])
            parts = tuple(
                Polygon(
                    _ring_from_json(p["exterior"], f"part {i + 1} exterior"),
                    tuple(_ring_from_json(h, f"part {i + 1} hole {j + 1}") for j, h in enumerate(p.get("holes", ()))),
                )
                for i, p in enumerate(data["parts"])
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise GeometryError(f"malformed polygon data ({e.__class__.__name__}: {str(e):.200})") from None
        return cls(parts, width, height)

    def to_shapely(self) -> MultiPolygon:
        return MultiPolygon([p.to_shapely() for p in self.parts])

    def scaled_to(self, width: int, height: int) -> Polygons:
        """The same outline on the image resized to `width` x `height` px (each coordinate scaled); itself
        when the size is its own."""
        if (width, height) == (self.width, self.height):
            return self
        fx, fy = width / self.width, height / self.height

        def ring(r: Ring) -> Ring:
            return tuple((x * fx, y * fy) for x, y in r)

        parts = tuple(Polygon(ring(p.exterior), tuple(ring(h) for h in p.holes)) for p in self.parts)
        return Polygons(parts, width, height)


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _ring_to_json(ring: Ring) -> list[list[float | int]]:
    return [[_num(x), _num(y)] for x, y in ring]


def _ring_from_json(ring: Any, what: str) -> Ring:
    out = []
    for pt in ring:
        if len(pt) != 2:
            raise ValueError(f"{what}: a vertex must be [x, y], got {pt!r}")
        out.append((float(pt[0]), float(pt[1])))
    return tuple(out)


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring given open as (N, 2) (x, y) vertices, px²: positive for an exterior
    (clockwise on screen), negative for a hole."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def polygonal_parts(geom: Any) -> list[ShapelyPolygon]:
    """The polygons inside any geometry (lines and points from a repair have no area and are dropped)."""
    if geom.is_empty:
        return []
    if isinstance(geom, ShapelyPolygon):
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in polygonal_parts(g)]
    return []


def from_shapely(geom: Any, width: int, height: int) -> Polygons:
    """The polygonal parts of a shapely geometry as `Polygons`, largest first, rings oriented and open."""
    parts = sorted(polygonal_parts(geom), key=lambda p: -p.area)
    out = []
    for p in parts:
        p = shapely.orient_polygons(p)  # exterior positive shoelace area, holes negative
        out.append(
            Polygon(
                _open_ring(p.exterior.coords),
                tuple(_open_ring(h.coords) for h in p.interiors),
            )
        )
    return Polygons(tuple(out), width, height)


def _open_ring(coords: Sequence[Sequence[float]]) -> Ring:
    pts = [(float(x), float(y)) for x, y in coords]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts.pop()
    return tuple(pts)


def polygons_area_px(polys: Polygons) -> float:
    """Enclosed area in px² (exteriors minus holes, summed over parts; overlaps are not merged)."""
    total = 0.0
    for p in polys.parts:
        total += abs(signed_area(np.asarray(p.exterior, dtype=np.float64)))
        total -= sum(abs(signed_area(np.asarray(h, dtype=np.float64))) for h in p.holes)
    return total


def polygons_bbox(polys: Polygons) -> list[float]:
    """Bounding box [x, y, w, h] in pixels (COCO order) of all exterior vertices; GeometryError if empty."""
    pts = [pt for p in polys.parts for pt in p.exterior]
    if not pts:
        raise GeometryError("the outline is empty: it has no bounding box")
    arr = np.asarray(pts, dtype=np.float64)
    x0, y0 = arr.min(axis=0)
    x1, y1 = arr.max(axis=0)
    return [_num(x0), _num(y0), _num(x1 - x0), _num(y1 - y0)]


def polygons_svg_path(polys: Polygons, decimals: int = 2) -> str:
    """SVG path `d` attribute for all rings; draw it with `fill-rule="evenodd"` to show the holes."""
    parts = []
    for p in polys.parts:
        for ring in (p.exterior, *p.holes):
            if len(ring) < 2:
                continue
            pts = " L".join(f"{_fmt(x, decimals)} {_fmt(y, decimals)}" for x, y in ring)
            parts.append(f"M{pts} Z")
    return " ".join(parts)


def _fmt(v: float, decimals: int) -> str:
    s = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s
