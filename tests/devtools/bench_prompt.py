"""Per-stage time of a prompt through the page's handler path, in-process (no browser, no Gradio).

    python -m devtools.bench_prompt [--image PATH] [--prompts 30] [--no-box] [--profile]

Opens one image in a temporary project and sends, as `bench_browser` does, a box and then alternating
lesion / not-lesion clicks near its centre (a new box every 10 prompts; with --no-box the prompts are
cleared there instead, so clicks go alone, answered with the mirror image too) through `gestures.handle_gesture`,
then what the page's second event does (`measuring.measurements`). Each stage is timed with
time.perf_counter: the decoder runs, the fit to the clicks, the full-resolution masks, the outline
tracing, the view JSON, the measurements. Prints median / p95 ms per prompt; `--profile` adds cProfile's top functions.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devtools.bench_browser import default_image, percentile

Times = dict[str, list[float]]


class Stopwatch:
    """Milliseconds spent in wrapped functions since the last `lap()`, by stage name."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] += 1000 * (time.perf_counter() - t0)

        return timed

    def lap(self) -> dict[str, float]:
        out, self.spent = dict(self.spent), defaultdict(float)
        return out


@contextlib.contextmanager
def patched(targets: list[tuple[Any, str]], watch: Stopwatch) -> Iterator[None]:
    """Time `getattr(owner, name)` for each (owner, name) (stage = name) while inside; restored after."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
    for owner, name, fn in saved:
        setattr(owner, name, watch.wrap(name, fn))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def gestures(width: int, height: int, n: int) -> Iterator[dict[str, Any]]:
    """A box every 10 prompts, else a click near the centre, lesion / not-lesion in turn (image pixels)."""
    box = [0.25 * width, 0.2 * height, 0.75 * width, 0.8 * height]
    for i in range(n):
        if i % 10 == 0:
            yield {"kind": "gesture", "type": "box", "box": box, "seq": i + 1}
        else:
            dx, dy = ((i * 37) % 21 - 10) / 100 * width, ((i * 53) % 21 - 10) / 100 * height
            click = {"x": width / 2 + dx, "y": height / 2 + dy, "positive": i % 2 == 1}
            yield {"kind": "gesture", "type": "click", **click, "seq": i + 1}


def run(image: Path, prompts: int, profile: cProfile.Profile | None = None, boxes: bool = True) -> Times:
    """Stage times (ms) of `prompts` prompts on `image`, one entry per prompt and stage (without `boxes`,
    each box of `gestures` clears the prompts instead, untimed)."""
    import dermaseg.core.interactive.refine as refine_module
    import dermaseg.core.interactive.session as interactive_module
    import dermaseg.core.segment.segmenter as segmenter_module
    from dermaseg.core.annotation.project import Project
    from dermaseg.core.segment.segmenter import Engine
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page import masks as masks_module
    from dermaseg.webui.page import measuring as measuring_module
    from dermaseg.webui.page.gestures import handle_gesture
    from dermaseg.webui.page.measuring import measurements
    from dermaseg.webui.page.opening import open_project_image
    from dermaseg.webui.page.prompts import clear_prompts
    from dermaseg.webui.page.server import file_url
    from dermaseg.webui.page.session import Session
    from dermaseg.webui.page.views import candidate_choices, metrics_html, view_json

    work = Path(tempfile.mkdtemp(prefix="dermaseg-bench-"))
    shutil.copy(image, work / image.name)
    engine, project = Engine.open(Settings.from_env()), Project.init(work)
    times: Times = defaultdict(list)
    try:
        s = Session(engine.segmenter(), project, work / "views")
        open_project_image(s, project.images()[0].id)
        watch = Stopwatch()
        stages = [
            (engine.backend, "decode"),  # a box alone
            (engine.backend, "decode_features"),  # a click (the decoder with its mask features; alone, twice: mirror)
            (refine_module, "fit_logits"),  # the click fit (`colour_features` once per image)
            (segmenter_module, "mask_from_logits"),
            (interactive_module, "tidy_mask"),
            (masks_module, "mask_to_polygons"),
        ]
        with patched([*stages, (measuring_module, "measure")], watch), profile or contextlib.nullcontext():
            for g in gestures(s.image.width, s.image.height, prompts):
                if not boxes and g["type"] == "box":
                    clear_prompts(s)
                    watch.lap()
                    continue
                t0 = time.perf_counter()
                handle_gesture(s, json.dumps(g))
                t1 = time.perf_counter()
                view_json(s, file_url)
                t2 = time.perf_counter()
                measurements(s)
                view_json(s, file_url), metrics_html(s.metrics), candidate_choices(s)
                t3 = time.perf_counter()
                for name, ms in watch.lap().items():
                    times[name].append(ms)
                times["handle_gesture (all of the above)"].append(1000 * (t1 - t0))
                times["view_json"].append(1000 * (t2 - t1))
                times["1st event: gesture + view"].append(1000 * (t2 - t0))
                times["2nd event: measure + view + panel"].append(1000 * (t3 - t2))
    finally:
        project.close()
        shutil.rmtree(work, ignore_errors=True)
    return times


def table(times: Times) -> str:
    rows = ["| stage | per prompt, median ms | p95 ms |", "|---|---|---|"]
    for name, v in times.items():
        rows.append(f"| {name} | {statistics.median(v):.2f} | {percentile(v, 95):.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, help="image to prompt on (default: first dev image)")
    ap.add_argument("--prompts", type=int, default=30, help="prompts to time (1 box per 10)")
    ap.add_argument("--no-box", action="store_true", help="clicks alone: clear the prompts where a box would come")
    ap.add_argument("--profile", action="store_true", help="also print cProfile's top 30 functions")
    args = ap.parse_args(argv)
    image = args.image or default_image()
    prof = cProfile.Profile() if args.profile else None
    times = run(image, max(args.prompts, 1), prof, boxes=not args.no_box)
    every = "cleared every 10, clicks alone" if args.no_box else "a box every 10, else clicks"
    print(f"handler path per prompt, {image.name}, {args.prompts} prompts ({every})")
    print(table(times))
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
