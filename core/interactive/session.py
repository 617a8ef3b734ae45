"""The product's prompt path, one function for the page, the command line and `dermaseg evaluate`:
clicks by the method the variant answers best (its fine-tuned decoder, `RefineSession`, or prompt
translation for the bundled box-trained decoder, `ClickSession`), a box alone by the decoder head the
user chose; then the mask is tidied (`mask_tidy`)."""

from __future__ import annotations

from typing import Literal

from dermaseg.core.interactive.box_clicks import ClickSession
from dermaseg.core.interactive.refine import RefineSession
from dermaseg.core.interactive.tidy import tidy_mask
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import MaskResult, Segmenter

ClickMethod = ClickSession | RefineSession
# The page's working grid, px on the longest side: every dev and PH2 image (<= 1022 px) is worked on at
# full resolution, exactly as before; a 12-megapixel photo (4088 x 3068) at 1024 x 768, so that a click's
# upscaling, tidying, outline and measurements cost what they cost on a dermoscopy image.
WORK_MAX_SIDE = 1024


def click_session(segmenter: Segmenter) -> ClickMethod:
    """A new prompting session on `segmenter` by the method its model variant answers best."""
    return RefineSession(segmenter) if segmenter.engine.backend.has_tuned_decoder else ClickSession(segmenter)


def interactive_predict(
    segmenter: Segmenter,
    prompts: Prompts,
    session: ClickMethod | None = None,
    head: int | Literal["best"] = 0,
    shape: tuple[int, int] | None = None,
) -> MaskResult:
    """The product's mask for `prompts` on the segmenter's image (pass the user's session to reuse its
    cache; `head` applies to a box alone, as clicks have their method's own).

    shape: (h, w) of the mask to make, a grid over the image (`work_shape`); default the image's own.
    The page works on a bounded grid so that a prompt's cost does not grow with the image's pixels; the
    same call without `shape` then gives the full-resolution mask to save (no decoder run: cached).
    """
    if prompts.points:
        result = (session or click_session(segmenter)).predict(prompts, shape)
    else:
        result = segmenter.predict(prompts, head=head).at(shape)
    h, w = result.mask.shape
    return result.with_mask(tidy_mask(result.mask, prompts.scaled(w / result.image_size[1], h / result.image_size[0])))


def work_shape(height: int, width: int, max_side: int = WORK_MAX_SIDE) -> tuple[int, int]:
    """(h, w) of the grid the page works on for an image of `height` x `width` px: the image itself up to
    `max_side` px on its longest side, else scaled down to it (aspect kept; at least 1 px)."""
    scale = min(1.0, max_side / max(height, width))
    return (height, width) if scale == 1.0 else (max(1, round(height * scale)), max(1, round(width * scale)))
