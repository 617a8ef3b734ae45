"""Prefetch: the next images of a project encoded in one background thread, so moving on feels instant."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.segment.segmenter import Engine

PREFETCH_AHEAD = 2


class Prefetcher:
    """Encodes the next images of a project in one background thread, so moving on feels instant."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dermaseg-prefetch")
        self._queued: set[int] = set()
        self._lock = threading.Lock()

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
            segmenter = self.engine.segmenter()
            segmenter.set_image(project.load_image(image_id))
            InteractiveSession(segmenter).prepare()  # and what the first click will need
        except DermasegError:
            pass  # the user will see the error when opening that image
        finally:
            with self._lock:
                self._queued.discard(image_id)

    def wait(self) -> None:
        """Block until everything queued so far is encoded (for tests)."""
        self._pool.submit(lambda: None).result()
