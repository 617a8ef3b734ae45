"""Uploads keep the user's file name (in a hash folder), and opening an image says where its embedding came from."""

from __future__ import annotations

import numpy as np

from dermaseg.webui.page.opening import EMBEDDING_SOURCE, open_project_image
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.uploads import add_upload
from dermaseg.webui.page.views import gallery_choices


def test_upload_is_listed_under_its_file_name(project, dev_data, tmp_path):
    from PIL import Image

    data = dev_data[-2].image.read_bytes()
    image_id = add_upload(project, data, "Patient scan 3.jpg", 50_000_000)
    rec = project.image(image_id)
    assert rec.path.endswith("/Patient_scan_3.jpg") and rec.path.count("/") == 2  # uploads/<hash>/<name>
    labels = dict((i, label) for label, i in gallery_choices(project))
    assert labels[image_id].endswith(" uploads/Patient_scan_3.jpg")
    # another file of the same name: both listed, told apart by their folder
    other = tmp_path / "other.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(other)
    other_id = add_upload(project, other.read_bytes(), "Patient scan 3.jpg", 50_000_000)
    labels = dict((i, label) for label, i in gallery_choices(project))
    assert other_id != image_id and labels[image_id] != labels[other_id]
    assert all("Patient_scan_3.jpg · " in labels[i] for i in (image_id, other_id))


def test_open_message_reads_naturally(engine, project, tmp_path):
    s = Session(engine.segmenter(), project, tmp_path / "views")
    image_id = project.images()[0].id
    open_project_image(s, image_id)
    open_project_image(s, image_id)  # the second time from the cache
    assert "embedding from the memory cache" in s.message and "from computed" not in s.message
    assert set(EMBEDDING_SOURCE) == {"computed", "memory", "disk"}
