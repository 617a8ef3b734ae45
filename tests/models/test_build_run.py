"""`dermaseg models build`'s output: a progress bar and a summary on the terminal, converter output in the log.

A full build takes minutes; these run the build's step machinery on one real, quick, noisy step (CoreML
conversion of the box decoder: torch tracer warnings, coremltools notices and per-pass progress bars) and
`dermaseg models build` itself on a folder whose artifacts are present.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from dermaseg.models import export_onnx  # noqa: E402
from dermaseg.models.build_run import BUILD_LOG, BuildRun  # noqa: E402
from dermaseg.webui.cli import main  # noqa: E402

CONVERTER_NOISE = ("TracerWarning", "Converting PyTorch Frontend", "MIL default pipeline")


def test_converter_output_goes_to_the_log_not_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    pytest.importorskip("coremltools")
    from dermaseg.models.export_coreml import BOX_POINTS, convert_decoder, save_package
    from dermaseg.models.litemedsam import load_model

    log = tmp_path / BUILD_LOG
    with BuildRun(log, total=2) as run:
        with run.step("checkpoint"):
            model = load_model()
        with run.step("coreml box decoder"):
            save_package(convert_decoder(model, BOX_POINTS, BOX_POINTS), tmp_path / "decoder-box.mlpackage")
            run.note("CoreML: wrote decoder-box.mlpackage")
    print("after the run")  # the terminal is back
    out, err = capfd.readouterr()

    assert (tmp_path / "decoder-box.mlpackage").is_dir()
    text = log.read_text()
    for noise in CONVERTER_NOISE:
        assert noise in text
        assert noise not in out and noise not in err
    assert "== coreml box decoder" in text and "CoreML: wrote decoder-box.mlpackage" in text
    assert run.notes == ["CoreML: wrote decoder-box.mlpackage"]
    assert out == "after the run\n"
    assert "building models" in err and "2/2" in err  # the progress bar, on stderr
    assert "after the run" not in text


def test_a_failed_step_names_itself_and_shows_the_logs_tail(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    log = tmp_path / BUILD_LOG
    missing = tmp_path / "encoder-fp32.onnx"
    with pytest.raises(FileNotFoundError), BuildRun(log, total=1) as run, run.step("fp16"):
        print("converting")
        export_onnx.convert_fp16(missing, tmp_path / "encoder-fp16.onnx")
    out, err = capfd.readouterr()

    assert out == ""
    assert "model build failed during 'fp16': FileNotFoundError" in err
    assert f"last lines of {log}:" in err and f"full log: {log}" in err
    assert "  converting" in err  # the tail, indented
    assert "Traceback" in log.read_text() and "Traceback" in err  # the traceback is part of the tail
    assert not (tmp_path / "encoder-fp16.onnx").exists()


def test_models_build_when_up_to_date_prints_a_summary(
    models_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    for f in models_dir.iterdir():  # the built artifacts, without copying or touching them
        if f.name != BUILD_LOG:
            (cache / "models" / f.name).symlink_to(f)
    before = sorted(p.name for p in (cache / "models").iterdir())

    assert main(["models", "build", "--cache-dir", str(cache), "--no-coreml"]) == 0
    out, err = capfd.readouterr()

    assert "fp32: box mask IoU vs torch min 1.0000" in out
    assert "OpenVINO int8:" in out and "CoreML:" in out
    assert out.splitlines()[-1].endswith("are up to date (manifest verified); nothing to do")
    assert err == ""
    assert sorted(p.name for p in (cache / "models").iterdir()) == before  # nothing written, no log
