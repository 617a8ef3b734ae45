"""The process's numeric thread pools and malloc arenas, set in one place: `Engine.open` calls
`limit_numeric_threads` and `limit_malloc_arenas`.

ONNX Runtime runs its own intra-op pool (`Settings.threads`, spinning while it waits for work); numpy's
and SciPy's OpenBLAS start a pool of their own, one thread per core. On 2 cores the two fought: a click
alone on a PH2 image took 191 / 252 ms (median / p95) through the page's handler, 86 / 93 ms with
OpenBLAS held to one thread (the two decoder runs 146 -> 62 ms, the click fit 29 -> 7 ms; issue 18).
Every matrix numpy multiplies for a click is small (35 x 35 at most), so one BLAS thread loses nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

from threadpoolctl import threadpool_info, threadpool_limits

# Read by BLAS / OpenMP libraries loaded after this point (SciPy's OpenBLAS loads lazily).
_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_numeric_threads(blas_threads: int) -> None:
    """Hold every BLAS / OpenMP pool of this process to `blas_threads` threads, now (libraries already
    loaded, through threadpoolctl) and for libraries loaded later (environment). Process-wide."""
    if blas_threads < 1:
        raise ValueError(f"blas_threads must be >= 1, got {blas_threads}")
    for name in _ENV:
        os.environ[name] = str(blas_threads)
    threadpool_limits(limits=blas_threads)


def numeric_threads() -> dict[str, int]:
    """Threads of each loaded BLAS / OpenMP library as the library itself reports them, by file name."""
    return {os.path.basename(p["filepath"]): int(p["num_threads"]) for p in threadpool_info()}


_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """At most `arenas` glibc malloc arenas for the whole process, instead of up to 8 per core: each arena
    keeps the memory its threads freed, and the server's many threads (Gradio's workers, one per session)
    each grew their own. glibc's mmap threshold is left as it is: a 1 MiB one saved ~49 MiB more but cost
    every click ~10 ms in page faults (issue 18). False where the C library is not glibc: nothing set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
