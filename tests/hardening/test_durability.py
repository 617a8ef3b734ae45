"""The adversarial probe's steps against real `dermaseg serve` processes (issue 17, items 4 and 6):
a second server on a served folder is refused naming the first (and is not after a kill -9 of it); the
project's WAL deleted while serving: the next accept is refused with a clear message, not "saved", and
what was confirmed before survives a kill -9."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from devtools import load_test

from dermaseg.core.annotation.project import FILES_CHANGED, Project
from dermaseg.core.evaluation.dataset import box_from_mask

pytestmark = pytest.mark.slow


@pytest.fixture
def served_folder(dev_data, models_dir: Path, tmp_path: Path):
    """A project of 2 dev images, a private server cache, and the boxes around their lesions."""
    folder = tmp_path / "project"
    folder.mkdir()
    boxes = {}
    for case in dev_data[:2]:
        shutil.copy(case.image, folder / case.image.name)
        boxes[case.image.name] = box_from_mask(case.load_mask(), margin=8)
    with Project.init(folder) as p:
        images = [(r.id, boxes[r.path]) for r in p.images()]
    return folder, load_test.server_cache(models_dir, tmp_path / "cache"), images


def test_a_second_serve_is_refused_naming_the_first_until_it_dies(served_folder) -> None:
    folder, cache, _ = served_folder
    first = load_test.start_server(folder, cache)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "dermaseg.webui.cli", "serve", "--project", str(folder),
             "--port", str(load_test.free_port()), "--cache-dir", str(cache)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"already open in 'dermaseg serve' (pid {first.pid} on " in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()  # SIGKILL: no clean-up runs in the server
    again = load_test.start_server(folder, cache)  # no stale lock
    again.stop()


def test_a_deleted_wal_while_serving_refuses_the_save_and_keeps_the_earlier_ones(served_folder) -> None:
    from gradio_client import Client

    folder, cache, images = served_folder
    server = load_test.start_server(folder, cache)
    try:
        client = Client(server.url, verbose=False, download_files=False)
        (id1, box1), (id2, box2) = images
        # both images opened once before the journal goes (an image's first load records it: a write, which
        # would be refused there instead, before the save this test is about)
        client.predict(id2, api_name="/open_image")
        client.predict(id1, api_name="/open_image")
        client.predict(*box1, api_name="/box")
        saved = json.loads(client.predict("lesion", "Dr Wal", api_name="/accept")[0])["message"]
        assert saved.startswith("saved:"), saved
        (folder / ".dermaseg" / "project.sqlite-wal").unlink()
        client.predict(id2, api_name="/open_image")
        client.predict(*box2, api_name="/box")
        refused = json.loads(client.predict("lesion", "Dr Wal", api_name="/accept")[0])["message"]
    finally:
        server.kill()
    assert not refused.startswith("saved:") and FILES_CHANGED in refused, refused
    with Project.open(folder) as p:
        anns = p.annotations()
        assert [(a.image_id, a.provenance.annotator) for a in anns] == [(id1, "Dr Wal")]
        assert p.integrity_check() == "ok"
