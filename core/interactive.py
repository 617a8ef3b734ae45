"""The product's click path: the variant's fine-tuned decoder when it has one (`RefineSession`), else
prompt translation for the bundled box-trained decoder (`ClickSession`)."""

from __future__ import annotations

from dermaseg.core.click_prompts import ClickSession
from dermaseg.core.click_refine import RefineSession
from dermaseg.core.prompts import Prompts
from dermaseg.core.segmenter import MaskResult, Segmenter

ClickMethod = ClickSession | RefineSession


def click_session(segmenter: Segmenter) -> ClickMethod:
    """A new prompting session on `segmenter` by the method its model variant answers best."""
    return RefineSession(segmenter) if segmenter.engine.backend.has_tuned_decoder else ClickSession(segmenter)


def interactive_predict(segmenter: Segmenter, prompts: Prompts, session: ClickMethod | None = None) -> MaskResult:
    """One-shot form of `click_session(segmenter).predict(prompts)` (pass a session to reuse its cache)."""
    return (session or click_session(segmenter)).predict(prompts)
