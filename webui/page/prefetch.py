"""Prefetch: in one background thread, what the first click on the open image will need beyond its embedding
(its mirror image's), then the next images of the project encoded, so that moving on feels instant."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.image import LesionImage
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.segment.segmenter import Engine

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session

PREFETCH_AHEAD = 2


class Prefetcher:
    """Encodes the next images of a project in one background thread, so moving on feels instant."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dermaseg-prefetch")
        self._queued: set[int] = set()
        self._lock = threading.Lock()

    def prepare_clicks(self, s: Session) -> None:
        """Make ready, before anything queued after it, what the first click on `s`'s image will need beyond
        its embedding (`InteractiveSession.prepare`: the mirror image's embedding, ~260 ms of encoder), so
        that the image opens after one encoder run instead of two. The encoder runs outside the session's
        lock; only the rest (colour features) takes it. A click before it is ready is previewed at once (the
        preview needs only the image); its final answer waits for the mirror image's embedding, made once."""
        if s.image is not None:
            self._pool.submit(self._prepare_clicks, s, s.image)

    def _prepare_clicks(self, s: Session, image: LesionImage) -> None:
        try:
            self._warm(image)  # the embeddings, into the engine's shared cache
            with s.lock:
                if s.image is image:  # still open
                    s.clicks.prepare()  # from that cache now
        except DermasegError:
            pass  # a click will meet the error itself

    def _warm(self, image: LesionImage) -> None:
        """`image`'s embeddings into the engine's cache, and what its first click would need (a throwaway
        session's `prepare`)."""
        segmenter = self.engine.segmenter()
        segmenter.set_image(image)
        InteractiveSession(segmenter).prepare()

    def schedule(self, project: Project, image_id: int, ahead: int = PREFETCH_AHEAD) -> list[int]:
        """Queue the `ahead` images after `image_id`; returns the ids queued now."""
        ids = [r.id for r in project.images()]
        if image_id not in ids:
            return []
        i = ids.index(image_id)
        todo = [ids[(i + k) % len(ids)] for k in range(1, ahead + 1) if len(ids) > k]
        queued = []
        with self._lock:
            for j in todo:
                if j not in self._queued:
                    self._queued.add(j)
                    queued.append(j)
                    self._pool.submit(self._encode, project, j)
        return queued

    def _encode(self, project: Project, image_id: int) -> None:
        try:
            self._warm(project.load_image(image_id))
        except DermasegError:
            pass  # the user will see the error when opening that image
        finally:
            with self._lock:
                self._queued.discard(image_id)

    def wait(self) -> None:
        """Block until everything queued so far is encoded (for tests)."""
        self._pool.submit(lambda: None).result()
