"""Image embeddings cached in memory (LRU bounded in bytes) and on disk (keyed by image and encoder).

Disk entries are plain bytes with a JSON header, never pickles:
    b"DSEMB1\n" + header JSON + b"\n" + float32 payload
The header repeats the key (image SHA-256, encoder SHA-256), shape, dtype and the payload's SHA-256;
an entry whose header or checksum does not match what was asked is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dermaseg.core.segment.preprocess import EMBEDDING_SHAPE

log = logging.getLogger(__name__)
MAGIC = b"DSEMB1\n"
Source = Literal["memory", "disk", "computed"]


@dataclass(frozen=True)
class CacheKey:
    """An embedding is a function of the image pixels and the encoder file, nothing else."""

    image_sha256: str
    encoder_sha256: str

    @property
    def filename(self) -> str:
        return f"{self.encoder_sha256[:16]}/{self.image_sha256}.emb"


class EmbeddingCache:
    """Memory LRU of at most `memory_bytes`, backed by a folder (None: memory only). Thread-safe."""

    def __init__(self, disk_dir: Path | None, memory_bytes: int = 256 * 1024 * 1024) -> None:
        self.disk_dir = disk_dir
        self.memory_bytes = memory_bytes
        self._lru: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self._pending: dict[CacheKey, Future[tuple[np.ndarray, Source]]] = {}  # being found or computed

    def get_or_compute(self, key: CacheKey, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, Source]:
        """The embedding (1, 256, 64, 64) float32 for `key`, and where it came from. A caller asking for a key
        another thread is computing waits for that result (and its error) instead of computing it again:
        a click may need the mirror image's embedding while it is made in the background."""
        if (emb := self._memory_get(key)) is not None:
            return emb, "memory"
        with self._lock:
            pending = self._pending.get(key)
            first = pending is None
            if first:
                pending = self._pending[key] = Future()
        if not first:
            return pending.result()
        try:
            found = self._find_or_compute(key, compute)
            pending.set_result(found)
            return found
        except BaseException as e:
            pending.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._pending[key]

    def _find_or_compute(self, key: CacheKey, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, Source]:
        if (emb := self._memory_get(key)) is not None:  # made by a caller that finished since we looked
            return emb, "memory"
        if (emb := self._disk_get(key)) is not None:
            self._memory_put(key, emb)
            return emb, "disk"
        emb = np.ascontiguousarray(compute(), dtype=np.float32)
        emb.setflags(write=False)
        self._memory_put(key, emb)
        self._disk_put(key, emb)
        return emb, "computed"

    def contains(self, key: CacheKey) -> bool:
        with self._lock:
            if key in self._lru:
                return True
        return self.disk_dir is not None and (self.disk_dir / key.filename).is_file()

    @property
    def memory_used(self) -> int:
        return self._used

    def _memory_get(self, key: CacheKey) -> np.ndarray | None:
        with self._lock:
            emb = self._lru.get(key)
            if emb is not None:
                self._lru.move_to_end(key)
            return emb

    def _memory_put(self, key: CacheKey, emb: np.ndarray) -> None:
        with self._lock:
            if key in self._lru or emb.nbytes > self.memory_bytes:
                return
            self._lru[key] = emb
            self._used += emb.nbytes
            while self._used > self.memory_bytes:
                _, old = self._lru.popitem(last=False)
                self._used -= old.nbytes

    def _disk_get(self, key: CacheKey) -> np.ndarray | None:
        if self.disk_dir is None:
            return None
        path = self.disk_dir / key.filename
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("embedding cache entry %s unreadable (%s); recomputing", path, e)
            return None
        emb = decode_entry(data, key)
        if emb is None:
            log.warning("embedding cache entry %s is corrupt or foreign; recomputing", path)
            path.unlink(missing_ok=True)
        return emb

    def _disk_put(self, key: CacheKey, emb: np.ndarray) -> None:
        if self.disk_dir is None:
            return
        path = self.disk_dir / key.filename
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(encode_entry(emb, key))
            os.replace(tmp, path)  # atomic: readers see the old entry or the whole new one
        except OSError as e:  # disk full, read-only: the cache is an optimisation, keep working
            log.warning("cannot write embedding cache entry %s (%s)", path, e)
            tmp.unlink(missing_ok=True)


def encode_entry(emb: np.ndarray, key: CacheKey) -> bytes:
    payload = np.ascontiguousarray(emb, dtype="<f4").tobytes()
    header = {
        "image_sha256": key.image_sha256,
        "encoder_sha256": key.encoder_sha256,
        "shape": list(emb.shape),
        "dtype": "<f4",
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def decode_entry(data: bytes, key: CacheKey) -> np.ndarray | None:
    """The embedding in `data` if it is intact and belongs to `key`, else None."""
    if not data.startswith(MAGIC):
        return None
    head_end = data.find(b"\n", len(MAGIC))
    if head_end < 0:
        return None
    try:
        header = json.loads(data[len(MAGIC) : head_end])
    except ValueError:
        return None
    payload = data[head_end + 1 :]
    expected_bytes = int(np.prod(EMBEDDING_SHAPE)) * 4
    if (
        not isinstance(header, dict)
        or header.get("image_sha256") != key.image_sha256
        or header.get("encoder_sha256") != key.encoder_sha256
        or header.get("shape") != list(EMBEDDING_SHAPE)
        or header.get("dtype") != "<f4"
        or len(payload) != expected_bytes
        or hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")
    ):
        return None
    emb = np.frombuffer(payload, dtype="<f4").reshape(EMBEDDING_SHAPE).astype(np.float32)
    emb.setflags(write=False)
    return emb
