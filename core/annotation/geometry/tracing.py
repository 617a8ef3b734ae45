"""Masks <-> polygons, exactly: the pixel-edge outline of a bool mask, and the mask of an outline.

`mask_to_polygons(mask)` traces the pixel-edge boundary exactly: every 4-connected component becomes one
`Polygon`, every hole one hole ring; `polygons_to_mask` (pixel centre inside) gives the mask back pixel
for pixel. Pixels that touch only at a corner are separate parts that touch at a point. Masks are
bool (H, W); coordinates as in `polygons`.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import MultiPolygon

from dermaseg.core.annotation.geometry.polygons import Polygon, Polygons, Ring, from_shapely, signed_area
from dermaseg.core.errors import GeometryError

# Directions: 0 = +x, 1 = +y (down), 2 = -x, 3 = -y. The foreground is on the right-hand side on screen.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def mask_to_polygons(mask: np.ndarray, tolerance_px: float = 0.0) -> Polygons:
    """Outline of a bool (H, W) mask as polygons in (x, y) pixel coordinates.

    tolerance_px = 0: the exact pixel-edge boundary (vertices at integer pixel corners, collinear
    vertices removed), so `polygons_to_mask` returns the same mask. Every 4-connected component is a
    part, every hole a hole ring; parts are sorted by area, largest first.
    tolerance_px > 0: the exact outline simplified with Douglas-Peucker in its topology-preserving
    form (no part or hole is dropped, rings do not cross); always re-derived from the mask.

    Cost (CPU time, 2-core dev machine, the 65 dev masks of 600x450 to 768x576): median 3.6 ms,
    max 7.5 ms; `polygons_to_mask` back: median 5.7 ms, max 10 ms. Worst case, a 765x574 mask of random
    noise (29k parts, ~880k boundary edges): about 1.2 s. (Two scans for the edges and a walk over the
    vertices only made the trace x0.70 and tolerance 1 px x0.68 of that, same output, same run.)
    """
    mask = _as_bool_mask(mask)
    if tolerance_px < 0 or not math.isfinite(tolerance_px):
        raise GeometryError(f"simplification tolerance must be a finite number >= 0, got {tolerance_px!r}")
    h, w = mask.shape
    parts = _assemble(_trace_rings(mask))
    if tolerance_px > 0 and parts:
        # GEOS geometry straight from the traced arrays: the exact outline's Python tuples are never built.
        simple = shapely.simplify(_multipolygon(parts), tolerance_px, preserve_topology=True)
        if not simple.is_valid:
            simple = shapely.make_valid(simple)
        return from_shapely(simple, w, h)
    return Polygons(tuple(Polygon(_ring_tuple(e), tuple(_ring_tuple(r) for r in holes)) for e, holes in parts), w, h)


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise GeometryError(f"a mask must be a 2-D (H, W) array, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed unit edges between foreground and background: start x, start y, direction.

    Ordered top edges, right, bottom, left, each row-major by pixel. Found as the places where two
    neighbouring cells of the zero-padded mask differ: two comparisons and two `nonzero` scans of the
    mask (rather than one per side), the cell on the far side telling which side the edge is.
    """
    p = np.pad(mask, 1)
    below = p[1:, 1:-1]  # below[k, c]: pixel (k, c), under the horizontal edge at y = k
    ky, kx = np.nonzero(below != p[:-1, 1:-1])
    top = below[ky, kx]  # foreground under the edge: its top edge (+x); else the bottom edge (-x) of the one above
    right = p[1:-1, 1:]  # right[r, k]: pixel (r, k), right of the vertical edge at x = k
    vy, vx = np.nonzero(right != p[1:-1, :-1])
    left = right[vy, vx]  # foreground right of the edge: its left edge (-y); else the right edge (+y) of the other
    xs = (kx[top], vx[~left], kx[~top] + 1, vx[left])
    ys = (ky[top], vy[~left], ky[~top], vy[left] + 1)
    ds = [np.full(len(a), d) for d, a in enumerate(xs)]
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)


def _trace_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Closed simple rings of pixel corners, (N, 2) int arrays of (x, y), collinear vertices removed."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return []
    r0, c0 = int(rows[0]), int(cols[0])
    crop = mask[r0 : int(rows[-1]) + 1, c0 : int(cols[-1]) + 1]
    x, y, d = _boundary_edges(crop)
    x, y = x + c0, y + r0
    n = x.size
    stride = mask.shape[1] + 2
    start = y * stride + x
    end = (y + _DY[d]) * stride + (x + _DX[d])
    order = np.argsort(start, kind="stable")
    sorted_start = start[order]
    first = np.searchsorted(sorted_start, end, side="left")
    count = np.searchsorted(sorted_start, end, side="right") - first
    nxt = order[first]
    # Where two edges leave a corner (pixels touching diagonally), turn right, towards the pixel we came
    # along, so diagonal neighbours stay separate parts (4-connected foreground).
    two = np.nonzero(count == 2)[0]
    if two.size:
        a, b = order[first[two]], order[first[two] + 1]
        want = (d[two] + 1) % 4
        nxt[two] = np.where(d[a] == want, a, b)

    corner = d != d[_prev_of(nxt)]  # edges that start at a change of direction: the ring vertices
    to_corner = _next_corner(nxt, corner).tolist()
    x_l, y_l = x.tolist(), y.tolist()
    visited = bytearray(n)
    rings: list[np.ndarray] = []
    for e0 in np.nonzero(corner)[0].tolist():
        if visited[e0]:
            continue
        loop: list[tuple[int, int]] = []
        e = e0
        while not visited[e]:  # from vertex to vertex: every closed ring turns at least 4 times
            visited[e] = True
            loop.append((x_l[e], y_l[e]))
            e = to_corner[e]
        rings.extend(_split_at_repeats(loop))
    return rings


def _next_corner(nxt: np.ndarray, corner: np.ndarray) -> np.ndarray:
    """For every edge, the first corner edge after it along `nxt`, by pointer doubling.

    log2(longest straight run) vectorised steps, so the Python loop of `_trace_rings` visits only the
    vertices (~1/4 of the edges of a lesion outline) instead of every unit edge.
    """
    jump = nxt.copy()
    todo = np.nonzero(~corner[jump])[0]
    while todo.size:
        jump[todo] = jump[jump[todo]]
        todo = todo[~corner[jump[todo]]]
    return jump


def _prev_of(nxt: np.ndarray) -> np.ndarray:
    prev = np.empty_like(nxt)
    prev[nxt] = np.arange(nxt.size)
    return prev


def _split_at_repeats(loop: list[tuple[int, int]]) -> list[np.ndarray]:
    """Split a closed vertex loop that touches itself at a corner into simple loops."""
    if len(set(loop)) == len(loop):
        return [np.asarray(loop)]
    out: list[np.ndarray] = []
    stack: list[tuple[int, int]] = []
    where: dict[tuple[int, int], int] = {}
    for v in loop:
        if v in where:
            i = where[v]
            out.append(np.asarray(stack[i:]))
            for u in stack[i + 1 :]:
                del where[u]
            del stack[i + 1 :]
        else:
            where[v] = len(stack)
            stack.append(v)
    if len(stack) >= 3:
        out.append(np.asarray(stack))
    return out


def _inside_point(ring: np.ndarray) -> tuple[float, float]:
    """Centre of the pixel just left of the ring's first edge (the side without foreground)."""
    (x0, y0), (x1, y1) = ring[0], ring[1]
    dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
    return float(x0 + 0.5 * dx + 0.5 * dy), float(y0 + 0.5 * dy - 0.5 * dx)


RingParts = list[tuple[np.ndarray, list[np.ndarray]]]  # (exterior, holes) per part, (N, 2) int (x, y) rings


def _assemble(rings: list[np.ndarray]) -> RingParts:
    """Rings -> parts, largest first: positive rings are exteriors; each hole goes to the smallest
    exterior around it."""
    areas = [signed_area(r) for r in rings]
    shells = [i for i, a in enumerate(areas) if a > 0]
    holes = [i for i, a in enumerate(areas) if a < 0]
    owned: dict[int, list[int]] = {i: [] for i in shells}
    if holes:
        shell_rings = [rings[i] for i in shells]
        shell_geoms = shapely.polygons(
            shapely.linearrings(
                np.concatenate(shell_rings),
                indices=np.repeat(np.arange(len(shells)), [len(r) for r in shell_rings]),
            )
        )
        pts = shapely.points([_inside_point(rings[i]) for i in holes])
        tree = shapely.STRtree(shell_geoms)
        hole_idx, shell_idx = tree.query(pts, predicate="within")
        best: dict[int, int] = {}
        for h, s in zip(hole_idx.tolist(), shell_idx.tolist(), strict=True):
            if h not in best or areas[shells[s]] < areas[shells[best[h]]]:
                best[h] = s
        for h, s in best.items():
            owned[shells[s]].append(holes[h])
    order = sorted(shells, key=lambda i: (-areas[i], int(rings[i][:, 1].min()), int(rings[i][:, 0].min())))
    return [(rings[i], [rings[j] for j in owned[i]]) for i in order]


def _multipolygon(parts: RingParts) -> MultiPolygon:
    """The GEOS geometry of `parts`, built in one vectorised call (rings are closed by shapely)."""
    rings = [r for exterior, holes in parts for r in (exterior, *holes)]
    part_of = np.repeat(np.arange(len(parts)), [1 + len(holes) for _, holes in parts])
    ring_of = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    linear = shapely.linearrings(np.concatenate(rings).astype(np.float64), indices=ring_of)
    return shapely.multipolygons(shapely.polygons(linear, indices=part_of))


def _ring_tuple(ring: np.ndarray) -> Ring:
    return tuple((float(x), float(y)) for x, y in ring.tolist())


def polygons_to_mask(polys: Polygons, height: int, width: int) -> np.ndarray:
    """Rasterise to a bool (height, width) mask: a pixel is set when its centre is inside.

    Inside means: inside the exterior and not inside a hole of the same part (even-odd within a
    part), and the union over parts. A centre exactly on an edge counts for the side to its right
    (spans are half-open [x_left, x_right)) and rows use the half-open rule on y, so shared edges are
    never counted twice or missed. Vertices outside the image are fine; pixels outside are dropped.
    """
    height, width = int(height), int(width)
    if not polys.parts or height <= 0 or width <= 0:
        return np.zeros((max(height, 0), max(width, 0)), dtype=bool)
    rows, xa, xb = _spans(polys, height)
    ca = np.clip(np.ceil(xa - 0.5), 0, width).astype(np.int64)
    cb = np.clip(np.ceil(xb - 0.5), 0, width).astype(np.int64)
    keep = cb > ca
    stride = width + 1
    size = height * stride
    diff = np.bincount(rows[keep] * stride + ca[keep], minlength=size) - np.bincount(
        rows[keep] * stride + cb[keep], minlength=size
    )
    return np.cumsum(diff.reshape(height, stride), axis=1)[:, :width] > 0


def _spans(polys: Polygons, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Even-odd scanline spans of each part at pixel-centre rows: (row, x_left, x_right) arrays."""
    rings, part_of = [], []
    for i, part in enumerate(polys.parts):
        for ring in (part.exterior, *part.holes):
            r = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
            if len(r) >= 2:
                rings.append(r)
                part_of.append(np.full(len(r), i))
    if not rings:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    x0 = np.concatenate([r[:, 0] for r in rings])
    y0 = np.concatenate([r[:, 1] for r in rings])
    x1 = np.concatenate([np.roll(r[:, 0], -1) for r in rings])
    y1 = np.concatenate([np.roll(r[:, 1], -1) for r in rings])
    part = np.concatenate(part_of)
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    # Rows whose centre y = r + 0.5 satisfies ylo <= y < yhi (horizontal edges cross no row).
    r_first = np.clip(np.ceil(ylo - 0.5), 0, height).astype(np.int64)
    r_stop = np.clip(np.ceil(yhi - 0.5), 0, height).astype(np.int64)
    n = np.maximum(r_stop - r_first, 0)
    if n.sum() == 0:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    edge = np.repeat(np.arange(n.size), n)
    rows = r_first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n))
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    o = np.lexsort((xc, rows, part[edge]))
    rows, xc = rows[o], xc[o]
    # Within one part and row the crossings come in pairs (closed rings); pair them up in order.
    return rows[0::2], xc[0::2], xc[1::2]
