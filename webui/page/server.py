"""Serving the page offline: Gradio configured private (no analytics, no run history, loopback by default),
routes that would fetch a URL refused, and the folders the page writes to."""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.offline import disable_telemetry
from dermaseg.core.settings import Settings
from dermaseg.webui.canvas import STATIC
from dermaseg.webui.login import LoginLimits, LoginThrottle

# a login: one (user, password), or Gradio's callable (user, password) -> bool (awaitable: `project_login`)
Auth = tuple[str, str] | Callable[[str, str], bool] | Callable[[str, str], Awaitable[bool]]

THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
MAX_UPLOAD = "200mb"  # Gradio refuses larger uploads; the core pixel limit (Settings.max_pixels) applies after
# Gradio routes that make the server fetch a URL: `/file=<http URL>` (streamed through the server) and
# `/proxy=` (for gr.load, unused here). An offline tool must never reach out, whatever a page asks.
OUTSIDE_FETCH = re.compile(r"/(?:file=|file/|proxy=)(?:[A-Za-z][A-Za-z0-9+.-]*:|//|\\\\)")


def webui_dir(settings: Settings) -> Path:
    """Where the page keeps its files: display JPEGs, exports, Gradio's temporary files."""
    return settings.cache_dir / "webui"


def configure_environment(settings: Settings) -> None:
    """Offline and private Gradio settings; call before building the app."""
    disable_telemetry()  # Gradio analytics, huggingface_hub, the runtimes (done already when dermaseg.webui loaded)
    os.environ["GRADIO_RUN_HISTORY"] = "False"
    os.environ.setdefault("GRADIO_TEMP_DIR", str(webui_dir(settings) / "gradio"))
    for var in ("NO_PROXY", "no_proxy"):
        have = [v for v in os.environ.get(var, "").split(",") if v]
        os.environ[var] = ",".join(dict.fromkeys([*have, "127.0.0.1", "localhost"]))


def scratch_folder(settings: Settings) -> Path:
    """The folder of the project used when none is given."""
    return settings.cache_dir / "scratch"


def scratch_project(settings: Settings) -> Project:
    """The project used when none is given: uploads land in `<cache>/scratch/uploads/`."""
    folder = scratch_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    return Project.init(folder, max_pixels=settings.max_pixels)


def file_url(path: Path) -> str:
    """A URL the page can load `path` from (relative, so it works under a root path too)."""
    return f"gradio_api/file={path}"


class LocalOnly:
    """ASGI middleware: refuse the Gradio routes that would make this server fetch a URL (see OUTSIDE_FETCH)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and OUTSIDE_FETCH.search(scope.get("path", "")):
            refused = PlainTextResponse("dermaseg is offline: it serves local files only", status_code=403)
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def freeze_startup_objects() -> int:
    """Put every object alive now (the libraries', the model's, the page's: ~300,000) out of the cyclic
    garbage collector's sight (`gc.freeze`); returns how many.

    Python's full collection walks every tracked object: in the serving process it took 110-226 ms, about
    once a minute of clicking, and whatever prompt was being answered waited for it (issue 18). Objects made
    later are collected as before; frozen ones are still freed when nothing refers to them."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: Auth | None = None,
    block: bool = True,
    quiet: bool = False,
    max_file_size: str | int = MAX_UPLOAD,
    login_limits: LoginLimits | None = None,
) -> str:
    """Serve the app offline; returns the local URL (and blocks unless `block` is False).

    Gradio may serve only the page's own folders (display images, exports) and its upload folder;
    the routes that would fetch a URL are refused (`LocalOnly`), and uploads above `max_file_size` too.
    With a login, every route needs it (the gesture route included) and failed logins are slowed and limited
    per client address (`login_limits`, default `LoginLimits()`). The login is the project's users when it
    has any (`build_app` noted them: `project_login`), else `auth`: one (user, password), or a callable.
    """
    project_auth = getattr(app, "dermaseg_login", None)
    if project_auth is not None:
        if isinstance(auth, tuple):
            raise DermasegError(
                "this project has users, who log in with their own names and passwords "
                "(`dermaseg project user list`); a shared --auth login is for a project without users"
            )
        auth = auth or project_auth  # serve's own `project_login`, or this one
    allowed = [str(p) for p in getattr(app, "dermaseg_allowed", [])]
    for p in allowed:
        Path(p).mkdir(parents=True, exist_ok=True)
    middleware = [Middleware(LocalOnly)]
    login_limits = login_limits or LoginLimits()
    if auth is not None:
        middleware.append(Middleware(LoginThrottle, limits=login_limits))
    app.queue(default_concurrency_limit=1)  # events without their own limit (the page's have one: per-session locks)
    freeze_startup_objects()
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=auth,
        auth_message=login_limits.notice() if auth is not None else None,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=quiet,
        allowed_paths=allowed,
        theme=gr.themes.Default(primary_hue="blue", **THEME_FONTS),
        css=(STATIC / "app.css").read_text(encoding="utf-8"),
        footer_links=[],
        run_history=False,  # Gradio would keep inputs (medical images) in the browser's localStorage
        ssr_mode=False,
        enable_monitoring=False,
        max_file_size=max_file_size,
        app_kwargs={"middleware": middleware, "routes": getattr(app, "dermaseg_routes", [])},
    )
    return app.local_url
