"""The team panel through gradio_client against a real server with logins: Next image, Submit for review,
blind raters, a reviewer's Send back and Accept (two raters per image, real dev images, the real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client

from dermaseg.core.annotation.project import Project
from dermaseg.core.evaluation.dataset import box_from_mask

PASSWORD = "team-password"


@pytest.fixture(scope="module")
def team_project(dev_folder, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("team")
    cases = dev_folder(folder, 2)
    p = Project.init(folder)
    for name, role in (("ann", "annotator"), ("bob", "annotator"), ("rev", "reviewer")):
        p.add_user(name, PASSWORD, role)
    p.team.set_raters_per_image(2)
    yield p, {c.image.name: c.load_mask() for c in cases}
    p.close()


@pytest.fixture(scope="module")
def url(engine, team_project, web_settings) -> str:
    from dermaseg.webui.page.app import build_app, launch

    project = team_project[0]
    app = build_app(engine, project, web_settings)
    yield launch(app, block=False, quiet=True)  # the project's users log in
    app.close()


def _client(url: str, name: str) -> Client:
    return Client(url, auth=(name, PASSWORD), verbose=False)


def _panel(out: tuple) -> tuple[str, list[str]]:
    """(team status text, lesion choices) from an answer that opened an image."""
    status = next(x for x in out if isinstance(x, str) and "rater(s) per image" in x)
    lesion_radio = out[8]
    return status, [c[0] if isinstance(c, (list, tuple)) else c for c in lesion_radio["choices"]]


def _outline(client: Client, masks: dict[str, Path], out: tuple, name: str) -> None:
    """Box the lesion of the open image, accept it as `name`."""
    view = json.loads(out[0])
    expert = masks[Path(view["image"]["name"]).name] if "name" in view["image"] else next(iter(masks.values()))
    client.predict(*box_from_mask(expert), api_name="/box")
    client.predict("lesion", name, api_name="/accept")


def test_next_submit_blind_review(url: str, team_project) -> None:
    project, masks = team_project
    ann, bob, rev = (_client(url, n) for n in ("ann", "bob", "rev"))
    first = sorted(project.images(), key=lambda r: r.id)[0]

    out = ann.predict(api_name="/team_next")
    status, lesions = _panel(out)
    assert "**ann** (annotator)" in status and "yours to annotate" in status
    _outline(ann, masks, out, "ann")
    out = ann.predict(api_name="/team_submit")
    assert "submitted, awaiting review" in _panel(out)[0]
    assert [(a.user, a.state) for a in project.team.assignments(first.id)] == [("ann", "submitted")]

    out = bob.predict(api_name="/team_next")  # the second slot of the same image
    status, lesions = _panel(out)
    assert "yours to annotate" in status and "ann (submitted)" in status
    assert lesions == ["＋ new lesion"]  # blind: ann's lesion is not shown to bob
    refused = {"__type__": "update"}  # the links stay as they were; the page says why
    assert bob.predict(api_name="/export_image") == refused  # would hold ann's outline
    assert len(ann.predict(api_name="/export_image")) == 2  # hers is submitted: she sees all
    assert ann.predict(api_name="/export_project") == refused  # for reviewers
    rev.predict(api_name="/team_load")  # the page's load: the tab learns its user
    assert len(rev.predict(api_name="/export_project")) == 2

    # Drafts per image and rater: bob's work in progress is his, never restored for ann, and hers does not
    # replace his.
    x0, y0, x1, y1 = box_from_mask(next(iter(masks.values())))
    bob.predict(x0, y0, x1, y1, api_name="/box")
    assert project.draft(first.id, "bob") is not None and project.draft(first.id, "ann") is None
    view = json.loads(ann.predict(first.id, api_name="/open_image")[0])
    assert "restored" not in view["message"] and view["prompts"]["box"] is None
    ann.predict(x0 + 5, y0 + 5, x1 - 5, y1 - 5, api_name="/box")
    assert project.draft(first.id, "ann").prompts["box"] == [x0 + 5, y0 + 5, x1 - 5, y1 - 5]
    view = json.loads(bob.predict(first.id, api_name="/open_image")[0])
    assert "restored the work in progress" in view["message"] and view["prompts"]["box"] == [x0, y0, x1, y1]
    bob.predict(api_name="/clear")
    ann.predict(api_name="/clear")
    assert project.draft(first.id, "bob") is None and project.draft(first.id, "ann") is None

    out = bob.predict(api_name="/team_submit")  # nothing of his own yet: refused, said in the page
    assert "yours to annotate" in _panel(out)[0]
    assert json.loads(out[0])["message"].startswith("⚠") and "no annotation" in json.loads(out[0])["message"]

    out = rev.predict(api_name="/team_load")
    progress = next(x for x in out if isinstance(x, str) and "needs a rater" in x)  # the team progress
    assert f"- {first.path}: in progress - ann submitted; bob claimed" in progress
    review_list = out[-1]
    values = [c[1] for c in review_list["choices"]]
    assert values == [f"{first.id}|ann"]
    out = rev.predict(values[0], api_name="/team_open")
    assert len(_panel(out)[1]) == 2  # a reviewer sees ann's lesion (and "new")
    out = rev.predict(values[0], "", api_name="/team_return")  # no comment: refused
    assert project.team.assignments(first.id)[0].state == "submitted"
    rev.predict(values[0], "include the satellite lesion", api_name="/team_return")
    assert project.team.assignments(first.id)[0].state == "returned"

    out = ann.predict(api_name="/team_next")  # back to her, with the comment
    status = _panel(out)[0]
    assert "sent back to you" in status and "include the satellite lesion" in status
    ann.predict(api_name="/team_submit")
    assert [c[1] for c in rev.predict(api_name="/team_load")[-1]["choices"]] == values  # in the list again
    rev.predict(values[0], "", api_name="/team_accept")
    assert [(a.user, a.state) for a in project.team.assignments(first.id)][0] == ("ann", "accepted")
