"""The canvas's fast path (`gesture_route`): a gesture POSTed with the page's channel, answered with the view,
against the app on 127.0.0.1; sessions are reached through gradio_client as the page reaches them.
Its bounds: size, nesting, gestures in flight per session (so one page cannot starve the others), and the
server's login (`serve --auth`) required as on Gradio's own routes."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import uvicorn
from devtools.load_test import free_port
from gradio_client import Client
from starlette.applications import Starlette

from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.gesture_route import MAX_BODY_BYTES, MAX_DEPTH, MAX_PER_SESSION, PATH, gesture_route, nesting_depth


def post(url: str, body: bytes, method: str = "POST") -> tuple[int, dict]:
    req = urllib.request.Request(
        url.rstrip("/") + PATH, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text.startswith(b"{") else {}


def gesture(channel: str, **g) -> bytes:
    return json.dumps({"channel": channel, "gesture": g}).encode()


@pytest.fixture(scope="module")
def page(served, project, dev_data):
    """(gradio client, the session's channel, expert mask) with the first project image open."""
    client = Client(served[1], verbose=False)
    rec = project.images()[0]
    view = json.loads(client.predict(rec.id, api_name="/open_image")[0])
    expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
    return client, view["channel"], expert


def test_a_gesture_on_the_fast_path_acts_on_the_pages_own_session(served, page):
    client, channel, expert = page
    status, view = post(served[1], gesture(channel, type="box", box=list(box_from_mask(expert)), seq=7))
    assert status == 200 and view["kind"] == "view" and view["ack"] == 7
    assert view["polygons"] and view["prompts"]["box"] and view["channel"] == channel
    status, view = post(served[1], gesture(channel, type="click", x=3.0, y=3.0, positive=False, seq=8))
    assert status == 200 and view["prompts"]["labels"] == [0]
    undone = json.loads(client.predict(api_name="/undo"))  # the same session, through Gradio
    assert undone["prompts"]["labels"] == [] and undone["prompts"]["box"] and undone["ack"] == 8


def test_a_click_alone_is_answered_with_its_preview_first_then_the_final_view(served, project, dev_data):
    """Two NDJSON lines: the click's answer on the image alone, then the final one (with the mirror image's),
    the same as a session that never previews (the Gradio API) gives."""
    rec = project.images()[-1]  # an image no other test prompts on (a reopened image brings back its draft)
    client, other = Client(served[1], verbose=False), Client(served[1], verbose=False)
    channel = json.loads(client.predict(rec.id, api_name="/open_image")[0])["channel"]
    other.predict(rec.id, api_name="/open_image")
    expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
    ys, xs = np.nonzero(expert)
    x, y = float(np.median(xs)), float(np.median(ys))
    req = urllib.request.Request(
        served[1].rstrip("/") + PATH, data=gesture(channel, type="click", x=x, y=y, positive=True, seq=3)
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        kind, lines = r.headers["Content-Type"], r.read().decode().splitlines()
    assert kind.startswith("application/x-ndjson") and len(lines) == 2
    preview, final = (json.loads(line) for line in lines)
    assert preview["kind"] == "preview" and preview["view"]["ack"] == final["ack"] == 3 and final["kind"] == "view"
    assert preview["view"]["polygons"] and preview["view"]["polygons"] != final["polygons"]
    assert final["polygons"] == json.loads(other.predict(x, y, True, api_name="/click"))["polygons"]
    status, view = post(served[1], gesture(channel, type="box", box=list(box_from_mask(expert)), seq=4))
    assert status == 200 and view["kind"] == "view" and view["ack"] == 4  # a box: the view alone


def test_a_users_error_comes_back_in_the_view(served, page):
    _, channel, _ = page
    status, view = post(served[1], gesture(channel, type="wave", seq=9))
    assert status == 200 and view["message"].startswith("⚠") and "unknown gesture" in view["message"]
    status, view = post(served[1], gesture(channel, type="click", x="left", y=1, seq=10))
    assert status == 200 and "malformed gesture" in view["message"]
    status, view = post(served[1], gesture(channel, type="click", x=1, y=1, seq="next"))
    assert status == 200 and "malformed gesture" in view["message"] and view["ack"] == 10
    status, view = post(
        served[1],
        b'{"channel": "%s", "gesture": {"type": "ruler", "x": 1e999, "y": 1, "seq": 1e999}}' % channel.encode(),
    )
    assert status == 200 and "malformed gesture" in view["message"]  # json reads 1e999 as inf: no int
    status, view = post(served[1], gesture(channel, type="ruler", x=float("nan"), y=1, seq=11))
    assert status == 200 and "must lie on the image" in view["message"] and view["ruler"] == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (gesture("no-such-channel", type="box", box=[1, 1, 9, 9]), 404),
        (gesture("", type="box", box=[1, 1, 9, 9]), 404),
        (b"{", 400),
        (b"[]", 400),
        (json.dumps({"channel": 5, "gesture": {}}).encode(), 400),
        (json.dumps({"channel": "x", "gesture": "box"}).encode(), 400),
        (b"{" + b" " * MAX_BODY_BYTES + b"}", 413),
        (b'{"channel": "x", "gesture": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),  # was a bare 500
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), 400),
    ],
    ids=[
        "unknown-channel",
        "empty-channel",
        "not-json",
        "not-object",
        "channel-not-str",
        "gesture-not-obj",
        "too-big",
        "nested-50000",
        "nested-17",
    ],
)
def test_refusals(served, page, body: bytes, status: int):
    got, answer = post(served[1], body)
    assert got == status and answer.get("error")


def test_only_post(served):
    assert post(served[1], b"", method="GET")[0] == 405


def test_each_session_has_its_own_unguessable_channel(served, project):
    rec = project.images()[0]
    channels = {
        json.loads(Client(served[1], verbose=False).predict(rec.id, api_name="/open_image")[0])["channel"]
        for _ in range(2)
    }
    assert len(channels) == 2 and all(len(c) >= 32 for c in channels)


def test_nesting_depth_is_counted_outside_strings():
    edit = {"channel": "c", "gesture": {"type": "edit", "polygons": [{"exterior": [[1, 2]], "holes": [[[3, 4]]]}]}}
    assert nesting_depth(json.dumps(edit).encode()) == 7  # a hole's vertex: the deepest a page sends
    assert nesting_depth(b"5") == 0 and nesting_depth(b"[[]][]") == 2
    assert nesting_depth(b'["[[[[", {"a": "]]]]"}, [["\\"]]]') == 3  # brackets in strings, an escaped backslash
    assert nesting_depth(b'["]]]]]]]]", [[[[[[1]]]]]]') == 7  # a string cannot hide real nesting
    assert nesting_depth(b'["' + b'\\"' * 200_000) == 1  # an unterminated string of escaped quotes: linear


def test_an_outline_above_the_vertex_limit_is_refused_in_the_view(served, page):
    from dermaseg.webui.page.edits import MAX_EDIT_VERTICES

    _, channel, _ = page
    ring = [[10 + (i % 2), 10 + i * 1e-3] for i in range(MAX_EDIT_VERTICES + 1)]
    status, view = post(served[1], gesture(channel, type="edit", polygons=[{"exterior": ring, "holes": []}], seq=12))
    assert status == 200 and f"at most {MAX_EDIT_VERTICES:,} vertices" in view["message"] and view["ack"] == 12


# --------------------------------------------------------------------------------------------------
# fairness: gestures in flight per session


@pytest.fixture()
def gated_route():
    """The route on a real HTTP server (uvicorn), answering through a gate the test opens: while closed, every
    admitted gesture is in flight. Yields (url, gate, answered channels in order)."""
    gate, answered = threading.Event(), []

    def answer(session: str, g: dict, preview) -> str:
        if session == "a":
            gate.wait(30)
        answered.append(session)
        return json.dumps({"kind": "view", "ack": g.get("seq")})

    port = free_port()
    app = Starlette(routes=[gesture_route({"a": "a", "b": "b"}, answer)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/", gate, answered
    gate.set()
    server.should_exit = True
    thread.join(10)


def test_one_busy_session_cannot_starve_another(gated_route):
    """More stuck gestures on "a" than the server has worker threads (40): "b" is answered all the same."""
    url, gate, answered = gated_route
    n = 45
    with ThreadPoolExecutor(n) as pool:
        flood = [pool.submit(post, url, gesture("a", type="click", seq=i)) for i in range(n)]
        deadline = time.monotonic() + 30
        while sum(f.done() for f in flood) < n - MAX_PER_SESSION and time.monotonic() < deadline:
            time.sleep(0.01)  # the refusals come back at once; the admitted ones wait at the gate
        status, view = post(url, gesture("b", type="click", seq=99))  # the other session, while "a" is stuck
        assert status == 200 and view["ack"] == 99 and answered == ["b"]
        gate.set()
        answers = [f.result(30) for f in flood]
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200] * MAX_PER_SESSION + [429] * (n - MAX_PER_SESSION)
    assert all("busy" in a[1]["error"] for a in answers if a[0] == 429)
    assert answered == ["b"] + ["a"] * MAX_PER_SESSION
    assert post(url, gesture("a", type="click", seq=100))[0] == 200  # free again once answered


def test_a_flood_on_one_real_session_is_refused_not_queued(served, project):
    """The issue's steps on the real app: many gestures at once on one session; another session still answered."""
    rec = project.images()[0]
    a, b = (
        json.loads(Client(served[1], verbose=False).predict(rec.id, api_name="/open_image")[0])["channel"]
        for _ in range(2)
    )
    box = [10, 10, 200, 150]
    with ThreadPoolExecutor(40) as pool:
        flood = [pool.submit(post, served[1], gesture(a, type="box", box=box, seq=i)) for i in range(40)]
        other = post(served[1], gesture(b, type="box", box=box, seq=1))
        answers = [f.result(120) for f in flood]
    statuses = [s for s, _ in answers]
    assert other[0] == 200 and other[1]["channel"] == b and other[1]["prompts"]["box"]
    assert set(statuses) == {200, 429}  # some answered, the rest told to retry; none waited in a queue


def test_deep_nesting_through_the_gradio_event_is_a_clear_message(served, page):
    """The page's other way in (the Gradio event "gesture") parses the same JSON: refused before json.loads."""
    client, _, _ = page
    deep = '{"kind": "gesture", "type": "edit", "polygons": ' + "[" * 50_000 + "]" * 50_000 + "}"
    view = json.loads(client.predict(deep, api_name="/gesture"))
    assert f"nested more than {MAX_DEPTH} levels deep" in view["message"]
