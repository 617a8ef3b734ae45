"""The canvas's fast path: a gesture POSTed as JSON to the page's own server, answered with the view.

Through a Gradio event a prompt's round trip costs ~40 ms in the page before any model work (the
reference row of `bench_browser`); a plain fetch to a route of the same server costs ~3 ms. The route
knows a page only by its channel, an unguessable token that reaches the page inside its own session's
views. Anything else is refused (404 unknown channel, 400 malformed, 413 too large) and the page then
sends the gesture through the Gradio event instead, so nothing is lost when the server restarted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PATH = "/dermaseg/gesture"
MAX_BODY_BYTES = 4 * 1024 * 1024  # an edited outline of ~100k vertices


def gesture_route(channels: Mapping[str, Any], answer: Callable[[Any, dict[str, Any]], str]) -> Route:
    """A Starlette route for PATH: body {"channel": str, "gesture": {...}} -> `answer(session, gesture)`,
    the view JSON (str), computed in a worker thread. `channels` maps a channel to its session."""

    async def endpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _refuse(413, f"a gesture is at most {MAX_BODY_BYTES // 2**20} MiB")
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
        view = await run_in_threadpool(answer, session, gesture)
        return Response(view, media_type="application/json", headers={"Cache-Control": "no-store"})

    return Route(PATH, endpoint, methods=["POST"])


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)
