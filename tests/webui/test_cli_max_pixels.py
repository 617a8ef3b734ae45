"""`Settings.max_pixels` (DERMASEG_MAX_PIXELS) reaches every command that loads a user's image, not only uploads:
`dermaseg segment`, `dermaseg precompute` and the evaluation. A real dev image (600x450 or larger) is
refused under a limit below its size, with the message that says to downscale it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from dermaseg.core.errors import ImageLoadError
from dermaseg.core.evaluation.dataset import read_dataset
from dermaseg.core.evaluation.report import EvalConfig, run
from dermaseg.webui.cli.main import main

LIMIT = 100_000  # px; every dev image is larger (the smallest is 600x450 = 270,000 px)


@pytest.fixture
def dev_image(dev_data, tmp_path: Path) -> Path:
    image = dev_data[0].image
    with Image.open(image) as img:
        assert img.width * img.height > LIMIT
    return Path(shutil.copy(image, tmp_path / image.name))


def test_segment_honours_max_pixels(
    dev_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DERMASEG_MAX_PIXELS", str(LIMIT))
    out = tmp_path / "mask.png"
    assert main(["segment", str(dev_image), "--box", "10", "10", "200", "200", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {dev_image.name}:" in err and "above the limit" in err and "downscale it first" in err
    assert not out.exists()


def test_precompute_honours_max_pixels(
    dev_image: Path, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    for f in models_dir.iterdir():  # the built models, not copied; embeddings go to this cache only
        (cache / "models" / f.name).symlink_to(f)
    monkeypatch.setenv("DERMASEG_MAX_PIXELS", str(LIMIT))
    args = ["precompute", str(dev_image.parent), "--cache-dir", str(cache), "--backend", "onnx"]
    assert main(args) == 1  # 1: some image failed
    out, err = capsys.readouterr()
    assert "1 images: 0 computed, 0 already cached, 1 failed" in out
    assert "above the limit" in out + err
    assert not (cache / "embeddings").exists() or not any((cache / "embeddings").rglob("*.emb"))


def test_evaluation_honours_max_pixels(dev_data, engine, tmp_path: Path) -> None:
    cases = read_dataset(dev_data[0].image.parent.parent)[:1]
    with pytest.raises(ImageLoadError, match="above the limit"):
        run(engine, cases, EvalConfig(protocol="box", max_pixels=LIMIT), tmp_path / "eval")
