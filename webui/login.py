"""The server's login (a project's users, or `serve --auth`): who is logged in, and failed logins slowed, then
refused, per address.

`project_login` checks a login against the project's users (`Project.authenticate`: scrypt, disabled users
refused); Gradio then names the logged-in user in each event's `gr.Request.username`. No password, and no
name typed at a failed login (people type passwords into the name field), is ever logged.

Gradio checks its login on its own routes; `logged_in` asks Gradio's own check (its `/gradio_api/user`
route: the session cookie `access-token[-unsecure]-<id>`, or an auth dependency) so that routes added by
dermaseg require exactly the same login. Gradio's `/login` answers as fast as it can (200 guesses in 0.3 s
were measured); `LoginThrottle` slows failures from one client address, then locks that address out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradio.route_utils import API_PREFIX
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dermaseg.core.errors import DermasegError

if TYPE_CHECKING:
    from dermaseg.core.annotation.project import Project

log = logging.getLogger(__name__)

LOGIN_PATHS = ("/login", "/login/")  # Gradio's login form posts here (username, password)


def project_login(project: Project) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's `auth=` for a project with users: True when the name and password match an enabled user.

    Async, so Gradio awaits it; the scrypt check (~70 ms) runs in a worker thread, not on the event loop.
    A store that cannot answer (a server gone) refuses the login, with a log line that names no one.
    """

    async def check(username: str, password: str) -> bool:
        try:
            user = await asyncio.to_thread(project.authenticate, username, password)
        except DermasegError as e:
            log.warning("login: the project's users could not be read, login refused: %s", e)
            return False
        if user is not None:
            log.info("login: %s (%s)", user.name, user.role)
        return user is not None

    return check


async def logged_in(request: Request) -> bool:
    """True when the server has no login, or the request carries a session Gradio itself would accept."""
    app = request.app
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    return await gradio_user(request) is not None


async def gradio_user(request: Request) -> str | None:
    """The user Gradio's own `GET /gradio_api/user` names for this request's cookies (None: not logged in).

    Asked in-process through the app's router, so the check is Gradio's, whatever its cookies or auth
    dependency; anything but a JSON string answer counts as not logged in.
    """
    headers = [(k, v) for k, v in request.scope["headers"] if k in (b"cookie", b"host", b"authorization")]
    path = f"{API_PREFIX}/user"
    scope = {**request.scope, "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope["headers"] = headers
    status, body = 0, bytearray()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await request.app.router(scope, receive, send)
    try:
        user = json.loads(body) if status == 200 else None
    except ValueError:
        user = None
    return user if isinstance(user, str) else None


@dataclass(frozen=True)
class LoginLimits:
    """How failed logins from one client address are slowed, then refused.

    free: consecutive failures answered at once; each further attempt first waits `delay_s` seconds, doubling
    with each failure up to `max_delay_s`. lockout_after: after this many consecutive failures the address is
    refused (429) for `lockout_s` seconds, and again after each further failure. A successful login clears
    the count. max_clients: addresses remembered (the oldest is forgotten first).
    """

    free: int = 3
    delay_s: float = 1.0
    max_delay_s: float = 8.0
    lockout_after: int = 10
    lockout_s: float = 300.0
    max_clients: int = 10_000

    def delay(self, failures: int) -> float:
        """Seconds to wait before answering an attempt made after `failures` - 1 consecutive failures."""
        over = failures - self.free
        return 0.0 if over <= 0 else min(self.max_delay_s, self.delay_s * 2 ** (over - 1))

    def notice(self) -> str:
        """One sentence for the login page."""
        return (
            f"After {self.free} failed logins each try waits longer; after {self.lockout_after}, logins from "
            f"your address are refused for {_duration(self.lockout_s)}."
        )


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0  # time.monotonic()


class LoginThrottle:
    """ASGI middleware in front of Gradio's `POST /login`: per client address (the TCP peer; a proxy's
    X-Forwarded-For is not trusted), each attempt counts as a failure until its answer is a success, so
    guesses sent together are slowed and refused together."""

    def __init__(self, app: ASGIApp, limits: LoginLimits | None = None) -> None:
        self.app = app
        self.limits = limits or LoginLimits()
        self.clients: dict[str, _Failures] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        limits, now = self.limits, time.monotonic()
        address = (scope.get("client") or ("unknown",))[0]
        record = self.clients.get(address)
        if record is not None and record.locked_until > now:
            wait = math.ceil(record.locked_until - now)
            reason = f"too many failed logins from {address}: try again in {_duration(wait)}"
            await JSONResponse({"detail": reason}, 429, headers={"Retry-After": str(wait)})(scope, receive, send)
            return
        if record is None:
            if len(self.clients) >= limits.max_clients:
                del self.clients[next(iter(self.clients))]
            record = self.clients[address] = _Failures()
        record.count += 1
        if record.count >= limits.lockout_after:
            record.locked_until = now + limits.lockout_s
            log.warning("login: %d failures from %s; locked out for %g s", record.count, address, limits.lockout_s)
        if delay := limits.delay(record.count):
            await asyncio.sleep(delay)
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status == 200:
            self.clients.pop(address, None)


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds)} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"
