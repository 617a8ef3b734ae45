"""The canvas's fast path (`gesture_route`): a gesture POSTed with the page's channel, answered with the view,
against the app on 127.0.0.1; sessions are reached through gradio_client as the page reaches them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from gradio_client import Client

from dermaseg.core.dataset import box_from_mask
from dermaseg.webui.gesture_route import MAX_BODY_BYTES, PATH


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
    ],
    ids=["unknown-channel", "empty-channel", "not-json", "not-object", "channel-not-str", "gesture-not-obj", "too-big"],
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
