"""Clicks answered by a click-trained decoder, SAM's interactive loop: each click re-runs the decoder
with every prompt so far and the previous step's logits as mask input.

Used when the model variant ships a decoder fine-tuned for clicks (`dermaseg models train-clicks`);
`ClickSession` (prompt translation) remains the path for the box-only decoder. A lone box still goes to
the variant's box decoder, unchanged.
"""

from __future__ import annotations

from dermaseg.core.errors import PromptError
from dermaseg.core.prompts import NEGATIVE, Prompts
from dermaseg.core.segmenter import MaskResult, Segmenter


class RefineSession:
    """One user's prompting of the segmenter's current image. `predict(prompts)` is a function of the
    image and the prompts (in order); each prefix's result is cached, so a new click costs one decoder run."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self._results: dict[tuple[str, Prompts], MaskResult] = {}

    def predict(self, prompts: Prompts) -> MaskResult:
        """Mask for the user's `prompts` (image pixels). PromptError when the first click is negative
        and there is no box."""
        image = self.segmenter.image
        if image is None:
            return self.segmenter.predict(prompts)  # raises the usual "open an image first"
        prompts = prompts.validated(image.width, image.height)
        if not prompts.points:
            return self.segmenter.predict(prompts, head=0)
        if prompts.box is None and prompts.labels[0] == NEGATIVE:
            raise PromptError("start with a click on the lesion (or draw a box): the first click is negative")
        key = (image.sha256, prompts)
        if self._results and next(iter(self._results))[0] != image.sha256:
            self._results.clear()  # another image
        if key not in self._results:
            prefix = Prompts(prompts.box, prompts.points[:-1], prompts.labels[:-1])
            previous = self.predict(prefix) if prefix.points or prefix.box is not None else None
            mask_input = None if previous is None else previous.low_res_logits
            self._results[key] = self.segmenter.predict(prompts, head=0, mask_input=mask_input)
        return self._results[key]
