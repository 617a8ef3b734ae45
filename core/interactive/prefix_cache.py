"""The one cache of a prompting session: answers to prompt prefixes on the current image.

A click's answer is built on its prefix's (the prompts without the last click), so each prefix is worked
out once and kept until another image comes; a new click then costs one step. A click method may keep
other per-image work here under its own keys (the mirror image's answers, colour features).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class PrefixCache:
    """Values keyed by (image sha256, key), for one image at a time: asking about another image forgets
    everything kept for the last one."""

    def __init__(self) -> None:
        self._image: str | None = None
        self._values: dict[Hashable, Any] = {}

    def get(self, image: str, key: Hashable, make: Callable[[], T]) -> T:
        """The value kept for `key` on the image with sha256 `image`, else `make()`'s, kept. `make` may ask
        for other keys of the same image (a prefix's answer)."""
        if image != self._image:
            self._image, self._values = image, {}
        if key not in self._values:
            value = make()
            if image == self._image:  # `make` did not move to another image meanwhile
                self._values[key] = value
            return value
        return self._values[key]

    def clear(self) -> None:
        """Forget everything (the next question recomputes)."""
        self._image, self._values = None, {}
