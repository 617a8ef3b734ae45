"""Per-session locking: one tab's events one at a time, different tabs in parallel, measuring off the lock.

Ordering is shown with thread events, never with timings (the machine is shared).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.page import measuring
from dermaseg.webui.page.events import SessionRef, bound
from dermaseg.webui.page.measuring import measurements
from dermaseg.webui.page.opening import open_project_image
from dermaseg.webui.page.prompts import prompt_box
from dermaseg.webui.page.session import Session

WAIT_S = 30  # generous: only a failure waits this long


def blocking_handler(entered: threading.Event, release: threading.Event):
    @bound
    def handler(s) -> str:
        entered.set()
        assert release.wait(WAIT_S)
        return "done"

    return handler


def start(fn, *args) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    return t, out


def test_one_session_waits_another_does_not():
    a, b = SimpleNamespace(lock=threading.RLock()), SimpleNamespace(lock=threading.RLock())
    entered, release = threading.Event(), threading.Event()
    first, _ = start(blocking_handler(entered, release), a)
    assert entered.wait(WAIT_S)

    other_tab, other_out = start(bound(lambda s: "b"), b)
    other_tab.join(WAIT_S)
    assert other_out == ["b"]  # ran while session a's event held a's lock

    same_tab, same_out = start(bound(lambda s: "a again"), a)
    same_tab.join(0.2)
    assert same_tab.is_alive() and same_out == []  # queued behind a's running event
    release.set()
    for t in (first, same_tab):
        t.join(WAIT_S)
    assert same_out == ["a again"]


def test_session_ref_makes_one_session_for_simultaneous_events():
    made: list = []
    barrier = threading.Barrier(8)

    def make():
        made.append(1)
        return SimpleNamespace(lock=threading.RLock())

    ref = SessionRef(make)
    threads = [threading.Thread(target=lambda: (barrier.wait(), ref.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert len(made) == 1


@pytest.fixture()
def session(engine, project, tmp_path):
    s = Session(engine.segmenter(), project, tmp_path / "views")
    project.discard_draft(project.images()[0].id)  # each test starts afresh, not from an earlier test's work
    open_project_image(s, project.images()[0].id)
    return s


def test_measurements_run_off_the_lock_and_follow_a_newer_mask(session, dev_data, monkeypatch):
    """A prompt handled while measuring is not held back, and the stored metrics are for its mask."""
    expert = next(c for c in dev_data if c.image.name == session.image.name).load_mask()
    prompt_box(session, box_from_mask(expert))
    real_measure, calls = measuring.measure, []

    def measure_while_a_prompt_arrives(mask, rgb, calibration, pixel_size):
        if not calls:  # a prompt from the same tab, in another thread, while the first mask is measured
            t, _ = start(bound(prompt_box), session, (0, 0, session.image.width / 2, session.image.height / 2))
            t.join(WAIT_S)
            assert not t.is_alive(), "the prompt waited for the measurements"
        calls.append(mask)
        return real_measure(mask, rgb, calibration, pixel_size)

    monkeypatch.setattr(measuring, "measure", measure_while_a_prompt_arrives)
    metrics = measurements(session)
    assert len(calls) == 2 and calls[-1] is session.mask
    assert metrics is session.metrics and metrics.area_px == int(np.count_nonzero(session.mask))
