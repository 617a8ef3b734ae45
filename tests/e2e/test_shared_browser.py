"""Two laptops on one PostgreSQL project, in Debian's Chromium: the second has no copy of the images.

Laptop B (an empty folder) opens an image whose pixels come from the server, draws a box and accepts; the
lesion is in the shared database with B's provenance, and laptop A's page shows it as a saved lesion.
"""

from __future__ import annotations

import shutil

import pytest
from test_lesions import open_page, show, wait_for, wait_text

from dermaseg.core.evaluation.dataset import box_from_mask

pytestmark = pytest.mark.browser

CASE = 5


def test_a_laptop_without_the_images_annotates_and_the_other_sees_it(
    engine, dev_data, tmp_path, serve_project, browser, postgres_url
):
    from devtools.bench_browser import drag_box, wait_measured

    site_a, site_b = tmp_path / "a", tmp_path / "b"
    site_a.mkdir()
    site_b.mkdir()
    shutil.copy(dev_data[CASE].image, site_a / dev_data[CASE].image.name)
    with (
        serve_project(engine, site_a, tmp_path / "cache-a", db=postgres_url) as (project_a, url_a),
        serve_project(engine, site_b, tmp_path / "cache-b", db=postgres_url) as (project_b, url_b),
    ):
        assert project_b.scan_report.remote == (dev_data[CASE].image.name,)
        rec = project_b.images()[0]
        page = open_page(browser, url_b, rec.path)
        assert (
            "shared on postgresql" in page.content() and postgres_url.split(":")[2].split("@")[0] not in page.content()
        )
        x0, y0, x1, y1 = box_from_mask(dev_data[CASE].load_mask())
        wait_measured(page, drag_box(page, (x0 - 10, y0 - 10, x1 + 10, y1 + 10)))
        page.locator("#ds-accept").click()
        wait_text(page, ".toast-body", "lesion 1 of 1", "the save on laptop B not confirmed")
        saved = wait_for(lambda: project_a.annotations(rec.id), "the lesion in the shared database")
        assert len(saved) == 1 and saved[0].provenance.source == "model"
        assert (tmp_path / "cache-b" / "images" / f"{rec.file_sha256}{rec.path[-4:].lower()}").is_file()
        other = open_page(browser, url_a, rec.path)  # laptop A, its own copy of the image
        show(other, rec.path)
        wait_text(other, ".ds-status", "1 saved lesion shown", "laptop A does not show B's lesion")
        page.close()
        other.close()
