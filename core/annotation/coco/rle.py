"""Masks as pycocotools compressed RLE (column-major run lengths, `counts` a str, `size` [H, W]), and a
decoder of the `counts` string that does not trust it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

Json = Any  # a value as `json.loads` returns it
MIN_POLYGON_NUMBERS = 6  # a COCO polygon needs 3 points; pycocotools reads a 4-number list as a bbox


@dataclass(frozen=True)
class Rle:
    """A mask as pycocotools compressed RLE: `counts` (str) for an image of `height` x `width` px."""

    height: int
    width: int
    counts: str

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Rle:
        """Encode a bool or 0/1 (H, W) array (column-major, as pycocotools wants)."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f"a mask must be 2-D (H, W), got shape {m.shape}")
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8, copy=False) != 0, dtype=np.uint8))
        return cls(int(r["size"][0]), int(r["size"][1]), r["counts"].decode("ascii"))

    def to_coco(self) -> dict[str, Any]:
        """The JSON form: {"size": [H, W], "counts": str}."""
        return {"size": [self.height, self.width], "counts": self.counts}

    def _c(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}

    def decode(self) -> np.ndarray:
        """bool (H, W) array."""
        return mask_utils.decode(self._c()).astype(bool)

    @property
    def area(self) -> int:
        """Foreground pixel count."""
        return int(mask_utils.area(self._c()))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """[x, y, w, h] in pixel edges; (0, 0, 0, 0) for an empty mask."""
        x, y, w, h = mask_utils.toBbox(self._c())
        return int(x), int(y), int(w), int(h)


def decode_counts_string(counts: str) -> list[int]:
    """Decode pycocotools' compressed `counts` string into run lengths, without trusting it.

    Mirrors `rleFrString` in pycocotools' maskApi.c (6-bit groups offset by 48, sign bit 0x10,
    runs from the fourth on stored as a difference to the run two before). Raises ValueError on a
    character outside '0'..'o', a truncated value or an over-long value.
    """
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the counts string ends in the middle of a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {counts[p]!r} at position {p} of the counts string")
            if k >= 13:  # 13 groups of 5 bits already exceed any 64-bit run length
                raise ValueError("a run length in the counts string is too long")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out
