"""The dermaseg page: `build_app(engine, project, settings)` makes the Gradio Blocks; `launch` serves it.

The layout is in `layout`, the handlers in `events`, their wiring in `wiring`, serving in `server`.
"""

from __future__ import annotations

import weakref

import gradio as gr

from dermaseg.core.annotation.project import Project
from dermaseg.core.segment.segmenter import Engine
from dermaseg.core.settings import Settings
from dermaseg.webui.gesture_route import gesture_route
from dermaseg.webui.login import project_login
from dermaseg.webui.page.events import Events, SessionRef
from dermaseg.webui.page.layout import lay_out
from dermaseg.webui.page.server import configure_environment, launch, scratch_project, webui_dir
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.wiring import wire

__all__ = ["build_app", "launch"]


def build_app(engine: Engine, project: Project | None = None, settings: Settings | None = None) -> gr.Blocks:
    """The annotation page for `project` (a scratch project when None), served by `launch`."""
    settings = settings or Settings.from_env()
    configure_environment(settings)
    project = project or scratch_project(settings)
    logins = project.has_users()  # a project with users: the page needs a login as one of them, and names them
    base = webui_dir(settings)
    views_dir, exports_dir = base / "views", base / "exports"
    events = Events(engine, project, settings, exports_dir, logins=logins)
    channels: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()  # gone with Gradio's state

    def new_session() -> Session:
        s = Session(engine.segmenter(), project, views_dir)
        channels[s.channel] = s
        return s

    with gr.Blocks(title="dermaseg", analytics_enabled=False) as app:
        # Not a callable: Gradio would re-run a callable state at page load, racing `on_load` and
        # replacing the session it just opened. Gradio deep-copies this value once per browser session.
        state = gr.State(SessionRef(new_session))
        page = lay_out(project, logins=logins)
        wire(app, page, state, events)
    app.dermaseg_prefetcher = events.prefetcher  # type: ignore[attr-defined]
    app.dermaseg_login = project_login(project) if logins else None  # type: ignore[attr-defined]  # `launch` uses it
    app.dermaseg_allowed = [views_dir, exports_dir]  # type: ignore[attr-defined]
    app.dermaseg_routes = [gesture_route(channels, events.answer_gesture)]  # type: ignore[attr-defined]
    return app
