"""What a model build shows: a progress bar and a summary on the terminal; converter output in a log file.

The exporters are chatty in ways Python cannot silence one by one (torch's tracer warnings, coremltools'
import notices and pass-by-pass progress bars, NNCF's statistics and logging, C++ messages written straight
to file descriptors 1 and 2). While a `BuildRun` is open, all of that goes to its log file: descriptors 1
and 2, `sys.stdout` / `sys.stderr`, Python warnings and the root logger. The terminal gets the progress bar
(on the original stderr) and, on failure, the step that failed with the log's last lines.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

BUILD_LOG = "build.log"  # in the models folder, beside the artifacts (not listed in the manifest)
FAILURE_TAIL_LINES = 20


class BuildRun:
    """One build's output. Use as a context manager; `step(label)` around each unit of work.

    log_path: the log file (rewritten per run); total: the progress bar's number of steps.
    """

    def __init__(self, log_path: Path, total: int, desc: str = "building models") -> None:
        self.log_path = log_path
        self.total = total
        self.desc = desc
        self.notes: list[str] = []  # messages worth repeating in the summary (also written to the log)
        self._label = ""
        self._saved: tuple[int, int, TextIO, TextIO] | None = None
        self._bar: tqdm | None = None
        self._terminal_err: TextIO | None = None
        self._warnings: warnings.catch_warnings | None = None
        self._handler: logging.Handler | None = None

    def __enter__(self) -> BuildRun:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        saved_out, saved_err = os.dup(1), os.dup(2)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self._saved = (saved_out, saved_err, sys.stdout, sys.stderr)
        # New wrappers over fds 1 and 2 that are never closed: a module that keeps `sys.stdout` from import
        # time (NNCF's log handler) writes to the log now and to the terminal once the run is over.
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        self._terminal_err = open(saved_err, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("default")  # each distinct warning once, into the log
        warnings.showwarning = _warning_to_log
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._handler)
        self._bar = tqdm(total=self.total, desc=self.desc, unit="step", file=self._terminal_err)
        return self

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """One unit of work: named on the bar and in the log, counted when it ends without an error."""
        self._label = label
        assert self._bar is not None, "BuildRun.step outside `with BuildRun(...)`"
        self._bar.set_postfix_str(label)
        print(f"== {label}", flush=True)
        yield
        self._bar.update()

    def note(self, message: str) -> None:
        """A message for the summary (and the log); the signature of `build`'s `log`."""
        print(message, flush=True)
        self.notes.append(message)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        assert self._bar is not None and self._saved is not None and self._warnings is not None
        self._bar.close()
        self._terminal_err.close()  # type: ignore[union-attr]  # the wrapper only: closefd=False
        logging.getLogger().removeHandler(self._handler)  # type: ignore[arg-type]
        self._warnings.__exit__(None, None, None)
        sys.stdout.flush()
        sys.stderr.flush()
        saved_out, saved_err, sys.stdout, sys.stderr = self._saved
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            print(self.failure_report(exc), file=sys.stderr, flush=True)

    def failure_report(self, exc: BaseException) -> str:
        """The failed step, the error, the log's last lines and its path."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join("  " + line for line in lines[-FAILURE_TAIL_LINES:])
        return (
            f"model build failed during '{self._label}': {type(exc).__name__}: {exc}\n"
            f"last lines of {self.log_path}:\n{tail}\nfull log: {self.log_path}"
        )


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


__all__ = ["BUILD_LOG", "BuildRun"]
