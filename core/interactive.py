"""The product's prompt path, one function for the page, the command line and `dermaseg evaluate`:
clicks by the method the variant answers best (its fine-tuned decoder, `RefineSession`, or prompt
translation for the bundled box-trained decoder, `ClickSession`), a box alone by the decoder head the
user chose; then the mask is tidied (`mask_tidy`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from dermaseg.core.click_prompts import ClickSession
from dermaseg.core.click_refine import RefineSession
from dermaseg.core.mask_tidy import tidy_mask
from dermaseg.core.prompts import Prompts
from dermaseg.core.segmenter import MaskResult, Segmenter

ClickMethod = ClickSession | RefineSession


def click_session(segmenter: Segmenter) -> ClickMethod:
    """A new prompting session on `segmenter` by the method its model variant answers best."""
    return RefineSession(segmenter) if segmenter.engine.backend.has_tuned_decoder else ClickSession(segmenter)


def interactive_predict(
    segmenter: Segmenter,
    prompts: Prompts,
    session: ClickMethod | None = None,
    head: int | Literal["best"] = 0,
) -> MaskResult:
    """The product's mask for `prompts` on the segmenter's image (pass the user's session to reuse its
    cache; `head` applies to a box alone, as clicks have their method's own)."""
    if prompts.points:
        result = (session or click_session(segmenter)).predict(prompts)
    else:
        result = segmenter.predict(prompts, head=head)
    return replace(result, mask=tidy_mask(result.mask, prompts))
