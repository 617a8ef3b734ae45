"""`dermaseg bench`: what a user waits for, timed on the page's own code path, in a process without torch.

    dermaseg bench [--images DIR] [--max-images 6] [--clicks 4] [--rounds 2] [--json FILE] [--no-torch]

The runtime is timed as the server runs it: `Engine.open` (its thread settings), one page session
(`page.session.Session`) on a temporary project, the objects alive then frozen as the server freezes them
(`page.server.freeze_startup_objects`), prompts sent as the canvas sends them (`page.gestures.handle_gesture`),
the measurements as the page's second event (`page.measuring.measurements`).
On PH2-size dev images and on a 12-megapixel photo (4088 x 3068) made from the first of them:

- encoder: one encoder run; open_image: an image opened with a cold cache until a click can be answered
  (load, encoder; the page shows the image then); open_mirror: then what a click alone's final answer
  needs too (the mirror image's embedding and colour features: `Prefetcher.prepare_clicks` in the page, in
  the background), timed alone;
- box: a box around the expert mask (+5 px); click_after_box: corrective clicks after it;
- click_alone: a first click and corrective clicks without a box (answered on the image and its mirror),
  each sent as the page's fast path sends it, preview first; click_alone_preview: until its preview (the
  answer on the image alone, `InteractiveSession.preview`) was ready to send;
- measure: the measurements after each of those prompts;
- the same with `_12mp` for the photo, and peak_rss_mb (this process after the PH2 images: one session,
  server-like) and peak_rss_12mp_mb (after the photo too).
Corrective clicks come from the evaluation's simulator (`core.clicks.next_click`); each round after the
first moves them by a few px, so that no prompt is answered from the session's cache.

Reference: the torch model (encoder, decoder) in a subprocess (`python -m dermaseg.models.benchmark`),
on the same images in the same session, for the ratios; torch never loads in this process.
Figures are medians and 95th percentiles in ms.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermaseg.core.evaluation.click_simulator import next_click
from dermaseg.core.evaluation.dataset import DEV_DATA_ENV, DatasetCase, box_from_mask, dev_data_dir, read_dataset
from dermaseg.core.segment.embedding_cache import EmbeddingCache
from dermaseg.core.segment.preprocess import DecoderInputs, encoder_input
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import Engine, decoder_points
from dermaseg.core.settings import Settings
from dermaseg.core.threads import numeric_threads
from dermaseg.core.timing import call_ms, latency_stats

BIG_SIZE = (4088, 3068)  # (width, height) px: 12.5 megapixels, an ordinary clinical camera's
JITTER_PX = 4.0  # how far later rounds move each simulated click, on the working grid

Times = dict[str, list[float]]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: KiB


def big_case(case: DatasetCase, folder: Path) -> tuple[Path, np.ndarray]:
    """`case`'s image enlarged to BIG_SIZE (bicubic, JPEG quality 95, as a camera writes) and its expert
    mask enlarged with it (nearest)."""
    path = folder / f"{case.id}-12mp.jpg"
    Image.open(case.image).convert("RGB").resize(BIG_SIZE, Image.Resampling.BICUBIC).save(path, quality=95)
    gt = Image.fromarray(case.load_mask()).resize(BIG_SIZE, Image.Resampling.NEAREST)
    return path, np.asarray(gt)


def _prompting(s: Any, gt: np.ndarray, times: Times, suffix: str, clicks: int, rounds: int) -> None:
    """Time a box, clicks after it and clicks alone on the session's open image (`gt`: bool (H, W))."""
    from dermaseg.webui.page.gestures import handle_gesture
    from dermaseg.webui.page.measuring import measurements
    from dermaseg.webui.page.prompts import clear_prompts

    image = s.require_image()
    grid_h, grid_w = s.mask_shape()
    gt_grid = np.asarray(Image.fromarray(gt).resize((grid_w, grid_h), Image.Resampling.NEAREST))
    scale = image.width / grid_w
    rng = np.random.default_rng(0)
    seq = iter(range(1, 1_000_000))

    def gesture(g: dict[str, Any], name: str) -> None:
        g = {"kind": "gesture", "seq": next(seq), **g}
        shown: list[float] = []
        s.preview_to = lambda: shown.append(time.perf_counter())  # as the fast path takes previews
        t0 = time.perf_counter()
        try:
            handle_gesture(s, g)
        finally:
            s.preview_to = None
        times[name + suffix].append(1000 * (time.perf_counter() - t0))
        if shown:
            times[name + "_preview" + suffix].append(1000 * (shown[0] - t0))
        times["measure" + suffix].append(call_ms(lambda: measurements(s)))

    def click(name: str, jitter: float) -> bool:
        shown = s.mask if s.mask is not None else np.zeros_like(gt_grid)
        c = next_click(gt_grid, shown)
        if c is None:
            return False
        x, y = (np.array(c.xy) + (rng.normal(0, jitter, 2) if jitter else 0)).clip(0, [grid_w - 0.5, grid_h - 0.5])
        gesture({"type": "click", "x": float(x * scale), "y": float(y * scale), "positive": c.positive}, name)
        return True

    for r in range(rounds):
        jitter = JITTER_PX if r else 0.0
        clear_prompts(s)
        box = np.array(box_from_mask(gt, 5.0)) + (rng.normal(0, jitter * scale, 4) if jitter else 0)
        gesture({"type": "box", "box": [float(v) for v in box]}, "box")
        for _ in range(clicks):
            if not click("click_after_box", jitter):
                break
        clear_prompts(s)
        for _ in range(clicks + 1):
            if not click("click_alone", jitter):
                break


def decoder_call(backend: Any, emb: np.ndarray, points: tuple[np.ndarray, np.ndarray]) -> Callable[[], object]:
    """One run of the decoder the app runs for a box (the tuned one when the variant has it)."""
    inputs = DecoderInputs.of(emb, *points)
    return lambda: backend.decode(inputs, tuned=backend.has_tuned_decoder)


def run(settings: Settings, cases: list[DatasetCase], clicks: int, rounds: int) -> dict[str, Any]:
    """All figures of one benchmark run (see the module's docstring), as a JSON-ready dict."""
    from dermaseg.core.annotation.project import Project
    from dermaseg.webui.page.opening import open_project_image
    from dermaseg.webui.page.server import freeze_startup_objects
    from dermaseg.webui.page.session import Session

    work = Path(tempfile.mkdtemp(prefix="dermaseg-bench-"))
    times: Times = defaultdict(list)
    out: dict[str, Any] = {}
    try:
        folder = work / "project"
        folder.mkdir()
        for c in cases:
            shutil.copy(c.image, folder / c.image.name)
        engine = Engine.open(settings)  # the app's thread settings
        engine = Engine(engine.backend, EmbeddingCache(work / "embeddings"))  # a cold cache of our own
        project = Project.init(folder)
        try:
            s = Session(engine.segmenter(), project, work / "views")
            freeze_startup_objects()  # as the server does before serving
            by_name = {r.path: r.id for r in project.images()}
            for c in cases:
                rgb = np.asarray(Image.open(c.image).convert("RGB"))
                x, t = encoder_input(rgb)
                engine.backend.encode(x)  # warm-up at this input
                times["encoder"] += [call_ms(lambda x=x: engine.backend.encode(x)) for _ in range(3)]
                emb = engine.backend.encode(x)
                decode = decoder_call(engine.backend, emb, decoder_points(Prompts(box=box_from_mask(c.load_mask())), t))
                times["decoder"] += [call_ms(decode) for _ in range(10)]
                times["open_image"].append(call_ms(lambda c=c: open_project_image(s, by_name[c.image.name])))
                times["open_mirror"].append(call_ms(s.clicks.prepare))  # the page's background step, timed alone
                _prompting(s, c.load_mask(), times, "", clicks, rounds)
            out["peak_rss_mb"] = peak_rss_mb()
            big, gt = big_case(cases[0], folder)
            project.scan()
            big_id = project.image_by_path(big.name).id
            times["open_image_12mp"].append(call_ms(lambda: open_project_image(s, big_id)))
            times["open_mirror_12mp"].append(call_ms(s.clicks.prepare))
            _prompting(s, gt, times, "_12mp", clicks, rounds + 1)
            out["peak_rss_12mp_mb"] = peak_rss_mb()
        finally:
            project.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.update({name: latency_stats(v) for name, v in times.items()})
    out["torch_in_process"] = "torch" in sys.modules
    out["threads"] = {"onnxruntime_intra_op": settings.threads, "blas": numeric_threads()}
    out["backend"] = engine.backend.name
    out["model_id"] = engine.model_id
    return out


def torch_reference(images: Path, max_images: int) -> dict[str, Any]:
    """The torch model's encoder and decoder on the same images, in a subprocess (`models.benchmark`)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "torch.json"
        cmd = [sys.executable, "-m", "dermaseg.models.benchmark", "--images", str(images)]
        subprocess.run([*cmd, "--max-images", str(max_images), "--json", str(target)], check=True)
        return json.loads(target.read_text())


ROWS = (
    "encoder",
    "decoder",
    "open_image",
    "open_mirror",
    "box",
    "click_alone_preview",
    "click_alone",
    "click_after_box",
    "measure",
    "open_image_12mp",
    "open_mirror_12mp",
    "box_12mp",
    "click_alone_preview_12mp",
    "click_alone_12mp",
    "click_after_box_12mp",
    "measure_12mp",
)


def table(result: dict[str, Any]) -> str:
    """Markdown table of `run`'s figures, with the torch reference where there is one."""
    ref = result.get("torch", {})
    lines = ["| operation | p50 ms | p95 ms | n | torch p50 ms | torch / ours |", "|---|---|---|---|---|---|"]
    for name in ROWS:
        if name in result:
            r, t = result[name], ref.get(name)
            ratio = f"{t['p50_ms'] / r['p50_ms']:.2f}" if t else ""
            lines.append(
                f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['n']} | {t['p50_ms'] if t else ''} | {ratio} |"
            )
    lines.append(
        f"| peak RSS, one session (PH2 / + 12 MP) | {result['peak_rss_mb']} / {result['peak_rss_12mp_mb']} MB |||||"
    )
    return "\n".join(lines)


def main(settings: Settings, args: argparse.Namespace) -> int:
    images = args.images or dev_data_dir()
    if images is None:
        raise SystemExit(f"no dataset: pass --images DIR or set {DEV_DATA_ENV}")
    cases = read_dataset(images)[: args.max_images]
    result = run(settings, cases, args.clicks, args.rounds)
    if not args.no_torch:
        result["torch"] = torch_reference(images, args.max_images)
    print(
        f"\n{result['model_id']} on {result['backend']}; {len(cases)} images + one 12 MP photo; "
        f"threads: ONNX Runtime {settings.threads}, BLAS {result['threads']['blas']}"
    )
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
