"""The canvas's fast path: a gesture POSTed as JSON to the page's own server, answered with the view.

A prompt with a cheaper answer to show first (a click without a box: `InteractiveSession.preview`) is
answered with two lines (NDJSON): {"kind": "preview", "view": ...} as soon as the preview is made, then the
final view, which the page draws over it; any other gesture with the view alone (a JSON body).

Through a Gradio event a prompt's round trip costs ~40 ms in the page before any model work (the
reference row of `bench_browser`); a plain fetch to a route of the same server costs ~3 ms. The route
knows a page only by its channel, an unguessable token that reaches the page inside its own session's
views, and, when the server has a login, only from a browser logged in as Gradio's own routes require
(401 otherwise). Anything else is refused (404 unknown channel, 400 malformed or nested too deeply,
413 too large, 429 while the session already has a gesture running and one waiting) and the page then
sends the gesture through the Gradio event instead, so nothing is lost when the server restarted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dermaseg.webui.login import logged_in

PATH = "/dermaseg/gesture"
MAX_BODY_BYTES = 1024 * 1024  # an edited outline of page.edits.MAX_EDIT_VERTICES vertices, with room to spare
# A gesture nests 6 levels ({message {gesture [parts {part [ring [x, y]]}]}}); json.loads recurses per level
# and a body nested 50,000 deep ended in a RecursionError (a bare 500).
MAX_DEPTH = 16
# Gestures of one session in the route at once: one running (under the session's lock) and one waiting.
# The page sends one at a time; more would hold the server's worker threads, shared by every session.
MAX_PER_SESSION = 2

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)  # possessive: linear even when unterminated
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def nesting_depth(body: bytes) -> int:
    """How deep JSON text nests arrays and objects (0 for a scalar), without parsing it; brackets inside
    strings do not count. Linear in len(body), a few ms per MiB."""
    chars = np.frombuffer(_STRING.sub(b'""', body), np.uint8)
    step = np.isin(chars, _OPEN).astype(np.int32) - np.isin(chars, _CLOSE)
    return int(np.cumsum(step).max(initial=0))


Answer = Callable[[Any, dict[str, Any], Callable[[str], None]], str]


def gesture_route(channels: Mapping[str, Any], answer: Answer) -> Route:
    """A Starlette route for PATH: body {"channel": str, "gesture": {...}} -> `answer(session, gesture,
    preview)`, the view JSON (str), computed in a worker thread, which may first call `preview(view)` once
    (sent on at once). `channels` maps a channel to its session."""
    running: dict[str, int] = {}  # channel -> gestures in the route (event loop only: no lock needed)

    async def endpoint(request: Request) -> Response:
        if not await logged_in(request):
            return _refuse(401, "not logged in: reload the page and log in")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _refuse(413, f"a gesture is at most {MAX_BODY_BYTES // 2**20} MiB")
        if nesting_depth(bytes(body)) > MAX_DEPTH:
            return _refuse(400, f"malformed gesture message (nested more than {MAX_DEPTH} levels deep)")
        try:
            message = json.loads(body)
            channel, gesture = message["channel"], message["gesture"]
            if not isinstance(channel, str) or not isinstance(gesture, dict):
                raise TypeError("channel must be a string and gesture an object")
        except (ValueError, KeyError, TypeError) as e:
            return _refuse(400, f"malformed gesture message ({e.__class__.__name__})")
        session = channels.get(channel)
        if session is None:
            return _refuse(404, "unknown channel: reload the page")
        if running.get(channel, 0) >= MAX_PER_SESSION:
            return _refuse(429, "busy: this page's previous gestures are still being answered; retry")
        running[channel] = running.get(channel, 0) + 1

        def done(_: object) -> None:  # when the answer is made, whether or not the page still reads it
            if running[channel] == 1:
                del running[channel]
            else:
                running[channel] -= 1

        loop = asyncio.get_running_loop()
        preview: asyncio.Future[str] = loop.create_future()

        def send_preview(view: str) -> None:
            loop.call_soon_threadsafe(lambda: preview.done() or preview.set_result(view))

        answered = asyncio.ensure_future(run_in_threadpool(answer, session, gesture, send_preview))
        answered.add_done_callback(done)
        # The worker reports its result through the event loop after any preview it sent: not done here,
        # with the answer done, means there was none.
        await asyncio.wait({answered, preview}, return_when=asyncio.FIRST_COMPLETED)
        if not preview.done():
            preview.cancel()
            return Response(answered.result(), media_type="application/json", headers=_NO_STORE)
        lines = _lines(preview.result(), answered)
        return StreamingResponse(lines, media_type="application/x-ndjson", headers=_NO_STORE)

    return Route(PATH, endpoint, methods=["POST"])


_NO_STORE = {"Cache-Control": "no-store"}


async def _lines(preview: str, answered: asyncio.Future[str]) -> AsyncIterator[str]:
    """The preview's line, then the final view's (NDJSON)."""
    yield '{"kind":"preview","view":' + preview + "}\n"
    yield await answered + "\n"


def _refuse(status: int, reason: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)
