"""The team panel of a project with users: "Next image" and "Submit for review" for a rater, the submitted
work to accept or send back for a reviewer, and the open image's team state.

Who is working is the login Gradio's session names (`gr.Request.username`), kept on the tab's Session
(`Session.user`) so that its lesions are those the user may see (`lesions.lesions`: blind raters, the rule in
`core.annotation.project.assignments`). Until the tab knows its user, blind rating shows nobody's lesion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from dermaseg.core.annotation.project import Project
from dermaseg.core.annotation.project.records import IMAGE_STATE_WORDS
from dermaseg.core.errors import DermasegError
from dermaseg.webui.page.events import Events, bound, reported
from dermaseg.webui.page.session import Session  # at run time: Gradio resolves the handlers' hints (gr.Request)

PROGRESS = gr.Progress()  # Gradio fills a handler's gr.Progress default with the event's own
OVERVIEW_LINES = 50  # images listed in the team progress (all of them: `dermaseg project status`)
ONE = dict(concurrency_id="session", concurrency_limit=None)  # as `wiring`: per-session locks do the limiting
SLOT_WORDS = {
    "claimed": "yours to annotate",
    "submitted": "submitted, awaiting review",
    "accepted": "accepted",
    "returned": "sent back to you",
}


@dataclass(frozen=True)
class TeamPanel:
    """The team panel's components (shown only for a project with users)."""

    group: gr.Group
    status: gr.Markdown
    overview: gr.Markdown
    next_btn: gr.Button
    submit_btn: gr.Button
    review_group: gr.Column
    review_pick: gr.Dropdown
    comment: gr.Textbox
    accept_btn: gr.Button
    return_btn: gr.Button


def lay_out_team(logins: bool) -> TeamPanel:
    """The panel (inside a `gr.Blocks` column), shown with `logins` (a project with users); the review part
    appears for reviewers once they are known."""
    with gr.Group(visible=logins, elem_id="ds-team") as group:
        status = gr.Markdown("Log in to take part.", elem_id="ds-team-status")
        with gr.Row():
            next_btn = gr.Button("Next image", variant="primary", size="sm", elem_id="ds-team-next")
            submit_btn = gr.Button("Submit for review", size="sm", elem_id="ds-team-submit")
        with gr.Accordion("Team progress: every image's state and who holds it", open=False):
            overview = gr.Markdown(elem_id="ds-team-overview")
    with gr.Column(visible=False, elem_id="ds-team-review") as review_group:
        review_pick = gr.Dropdown(
            choices=[], label="Submitted work to review (opens the image)", elem_id="ds-team-review-pick"
        )
        comment = gr.Textbox(label="Comment (required to send back)", max_lines=3, elem_id="ds-team-comment")
        with gr.Row():
            accept_btn = gr.Button("✓ Accept", size="sm", elem_id="ds-team-accept")
            return_btn = gr.Button("↩ Send back", variant="stop", size="sm", elem_id="ds-team-return")
    return TeamPanel(
        group, status, overview, next_btn, submit_btn, review_group, review_pick, comment, accept_btn, return_btn
    )


def identify(s: Session, request: gr.Request | None) -> str:
    """The tab's user from Gradio's login (kept on the Session); DermasegError when nobody is logged in."""
    name = getattr(request, "username", None)
    if not name:
        raise DermasegError("log in to work in this team project")
    s.user = s.project.user(name).name
    return s.user


def status_text(s: Session) -> str:
    """Who is working, and the open image's team state: their own slot, the other raters, a reviewer's comment."""
    if s.user is None:
        return "Log in to take part."
    project = s.project
    user = project.user(s.user)
    lines = [f"**{user.name}** ({user.role}) · {project.team.raters_per_image()} rater(s) per image"]
    if s.image_id is not None:
        slots = project.team.assignments(s.image_id)
        mine = next((a for a in slots if a.user == user.name), None)
        others = [a for a in slots if a.user != user.name]
        if mine is None:
            lines.append("This image is not yours: **Next image** gives you one.")
        else:
            lines.append(f"This image: {SLOT_WORDS[mine.state]}.")
            if mine.comment and mine.state == "returned":
                lines.append(f"Reviewer {mine.reviewer}: “{mine.comment}”")
        if others:
            lines.append("Other raters: " + ", ".join(f"{a.user} ({a.state})" for a in others))
    return "  \n".join(lines)


def overview_text(project: Project, limit: int = OVERVIEW_LINES) -> str:
    """Images by team state, then each image someone works on (`ImageState.describe`), up to `limit` lines."""
    team = project.team.summary()
    lines = [" · ".join(f"{IMAGE_STATE_WORDS[k]} {v}" for k, v in team["by_state"].items())]
    worked = [s for s in project.team.image_states() if s.slots]
    lines += [f"- {s.path}: {s.describe()}" for s in worked[:limit]]
    if len(worked) > limit:
        lines.append(f"- … and {len(worked) - limit} more (`dermaseg project status`)")
    return "\n".join(lines)


def review_update(s: Session) -> tuple[Any, Any]:
    """The review group (visible to reviewers) and its list: submitted work of others, "path · rater"."""
    if s.user is None or s.project.user(s.user).role != "reviewer":
        return gr.update(visible=False), gr.update(choices=[], value=None)
    paths = {r.id: r.path for r in s.project.images()}
    todo = [a for a in s.project.team.assignments(state="submitted") if a.user != s.user]
    choices = [(f"{paths.get(a.image_id, a.image_id)} · {a.user}", f"{a.image_id}|{a.user}") for a in todo]
    return gr.update(visible=True), gr.update(choices=choices, value=None)


def _picked(value: str | None) -> tuple[int, str]:
    if not value or "|" not in value:
        raise DermasegError("pick the submitted work to review first")
    image_id, rater = value.split("|", 1)
    return int(image_id), rater


class TeamEvents:
    """The panel's handlers: each identifies the tab's user first, then answers the panel (and, when an
    image opens, everything `Events.open_outputs` answers)."""

    def __init__(self, ev: Events) -> None:
        self.ev = ev

    def panel(self, s: Session) -> tuple[Any, ...]:
        """The status, the team progress, the review group and its list."""
        return (status_text(s), overview_text(s.project), *review_update(s))

    def on_load(self, s: Session, request: gr.Request) -> tuple[Any, ...]:
        """Who the tab's user is; the open image again, now with the lesions they may see."""
        with reported(s):
            identify(s, request)
        return (*self.ev.open_outputs(s), *self.panel(s))

    def on_next(self, s: Session, request: gr.Request, progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
        with reported(s):
            image_id = s.project.team.claim_next(identify(s, request))
            if image_id is None:
                gr.Info("Nothing left for you: every image has its raters.")
            else:
                return (*self.ev.open_id(s, image_id, progress), *self.panel(s))
        return (*self.ev.open_outputs(s), *self.panel(s))

    def on_submit(self, s: Session, request: gr.Request) -> tuple[Any, ...]:
        with reported(s):
            if s.image_id is None:
                raise DermasegError("open an image first")
            s.project.team.submit(identify(s, request), s.image_id)
            gr.Info("Submitted for review.")
        return (*self.ev.open_outputs(s), *self.panel(s))

    def on_pick(
        self, s: Session, value: str | None, request: gr.Request, progress: gr.Progress = PROGRESS
    ) -> tuple[Any, ...]:
        with reported(s):
            identify(s, request)
            if value:
                return (*self.ev.open_id(s, _picked(value)[0], progress), status_text(s))
        return (*self.ev.open_outputs(s), status_text(s))

    def verdict(self, accept: bool) -> Any:
        """Accept or Send back the picked work (the comment is kept with it)."""

        def run(s: Session, value: str | None, comment: str | None, request: gr.Request) -> tuple[Any, ...]:
            with reported(s):
                image_id, rater = _picked(value)
                s.project.team.review(identify(s, request), image_id, rater, accept, comment)
                gr.Info(f"{rater}'s work accepted." if accept else f"Sent back to {rater}.")
                return (*self.panel(s), "")
            return (*self.panel(s), gr.update())

        return run


def wire_team(app: gr.Blocks, panel: TeamPanel, opened: list[Any], state: gr.State, ev: Events) -> None:
    """Connect the panel of a project with users; `opened`: what opening an image updates (as `wiring`)."""
    if not ev.logins:
        return
    te = TeamEvents(ev)
    shown = [panel.status, panel.overview, panel.review_group, panel.review_pick]
    app.load(bound(te.on_load), [state], [*opened, *shown], api_name="team_load", **ONE)
    panel.next_btn.click(bound(te.on_next), [state], [*opened, *shown], api_name="team_next", **ONE)
    panel.submit_btn.click(bound(te.on_submit), [state], [*opened, *shown], api_name="team_submit", **ONE)
    panel.review_pick.input(
        bound(te.on_pick), [state, panel.review_pick], [*opened, panel.status], api_name="team_open", **ONE
    )
    for btn, accept, name in ((panel.accept_btn, True, "team_accept"), (panel.return_btn, False, "team_return")):
        btn.click(bound(te.verdict(accept)), [state, panel.review_pick, panel.comment], [*shown, panel.comment],
                  api_name=name, **ONE)  # fmt: skip
