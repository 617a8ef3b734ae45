"""The page's working grid: the image itself up to `WORK_MAX_SIDE` px a side, else scaled down to it."""

from __future__ import annotations

# The page's working grid, px on the longest side: every dev and PH2 image (<= 1022 px) is worked on at
# full resolution, exactly as before; a 12-megapixel photo (4088 x 3068) at 1024 x 768, so that a click's
# upscaling, tidying, outline and measurements cost what they cost on a dermoscopy image.
WORK_MAX_SIDE = 1024


def work_shape(height: int, width: int, max_side: int = WORK_MAX_SIDE) -> tuple[int, int]:
    """(h, w) of the grid the page works on for an image of `height` x `width` px: the image itself up to
    `max_side` px on its longest side, else scaled down to it (aspect kept; at least 1 px)."""
    scale = min(1.0, max_side / max(height, width))
    return (height, width) if scale == 1.0 else (max(1, round(height * scale)), max(1, round(width * scale)))
