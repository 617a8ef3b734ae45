"""Load test of a shared project: N annotator processes saving at once on one PostgreSQL database.

    PYTHONPATH=tests python -m devtools.team_load [--annotators 8] [--seconds 20] [--images DIR] [--db URL]
                                                  [--json OUT]

Starts a throwaway PostgreSQL server on 127.0.0.1 (tests/postgres_cluster.py) unless `--db` names one, makes a
project there from dev images with 2 raters per image, then runs N separate processes, each as its own
annotator (a project user) with its own empty folder (its images come from the server, as on a laptop
without a copy): claim the next image, open it, keep a draft, save a lesion, edit its outline, submit, in a
loop until the time is up or no image needs them. Each process reports its latencies; this prints the
latency (median, p95) per operation and the throughput (saves per second, all processes), writes them as
JSON, and checks that every save a process confirmed is in the database afterwards and that no image got
more raters than it needs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dermaseg.core.annotation.project import Project, Provenance
from dermaseg.core.evaluation.dataset import dev_data_dir
from dermaseg.core.timing import latency_stats

OPERATIONS = ("claim", "open_image", "draft", "add", "update", "submit")
RATERS = 2


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def worker(url: str, folder: Path, cache: Path, name: str, seconds: float, seed: int) -> dict[str, Any]:
    """One annotator's loop; returns {"ms": {operation: [ms...]}, "saved": [annotation ids confirmed]}."""
    rng = np.random.default_rng(seed)
    ms: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    saved: list[int] = []

    def timed(op: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        ms[op].append((time.perf_counter() - t) * 1000)
        return out

    with Project.open(folder, db=url, image_cache=cache) as p:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            image_id = timed("claim", p.team.claim_next, name)
            if image_id is None:
                break  # every image has its raters
            rec = p.image(image_id)
            timed("open_image", p.load_image, rec.id)
            cy, cx = rec.height * rng.uniform(0.3, 0.7), rec.width * rng.uniform(0.3, 0.7)
            r = min(rec.height, rec.width) * 0.2
            timed("draft", p.save_draft, rec.id, {"points": [[int(cx), int(cy)]], "labels": [1]}, user=name)
            mask = _disc(rec.height, rec.width, cy, cx, r)
            ann = timed("add", p.add_annotation, rec.id, mask, provenance=Provenance(annotator=name))
            saved.append(ann.id)
            bigger = _disc(rec.height, rec.width, cy, cx, r * 1.1)
            timed("update", p.update_annotation, ann.id, mask=bigger, expected_version=ann.version)
            p.discard_draft(rec.id, user=name)
            timed("submit", p.team.submit, name, rec.id)
    return {"name": name, "ms": ms, "saved": saved}


def make_project(url: str, images: list[Path], folder: Path, annotators: int) -> None:
    """The images, shared on `url`, with `RATERS` raters per image and users annotator-0...N-1."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in images:
        shutil.copy(f, folder / f.name)
    with Project.init(folder, db=url) as p:
        p.team.set_raters_per_image(RATERS)
        for i in range(annotators):
            p.add_user(f"annotator-{i}", f"password-{i}")


def run(url: str, images: list[Path], annotators: int, seconds: float, work: Path) -> dict[str, Any]:
    make_project(url, images, work / "site", annotators)
    started = time.monotonic()
    procs = []
    for i in range(annotators):
        folder, cache = work / f"annotator-{i}", work / f"cache-{i}"
        folder.mkdir()
        code = (
            "import json, sys; from pathlib import Path; from devtools.team_load import worker; "
            f"print(json.dumps(worker({url!r}, Path({str(folder)!r}), Path({str(cache)!r}), 'annotator-{i}', "
            f"{seconds}, {i})))"
        )
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 300)
        if proc.returncode != 0:
            raise RuntimeError(f"an annotator process failed:\n{err.decode()[-3000:]}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    elapsed = time.monotonic() - started
    confirmed = [i for r in results for i in r["saved"]]
    with Project.open(work / "site", db=url, scan=False) as p:
        stored = {a.id for a in p.annotations()}
        slots = [len(p.team.assignments(rec.id)) for rec in p.images()]
    lost = sorted(set(confirmed) - stored)
    saves = sum(len(r["ms"]["add"]) + len(r["ms"]["update"]) for r in results)
    return {
        "annotators": annotators,
        "seconds": round(elapsed, 1),  # from the first process started to the last one done
        "images": len(images),
        "latency_ms": {op: latency_stats([x for r in results for x in r["ms"][op]]) for op in OPERATIONS},
        "saves": saves,
        "saves_per_s": round(saves / elapsed, 1),
        "confirmed_annotations": len(confirmed),
        "lost": lost,
        "over_assigned_images": sum(n > RATERS for n in slots),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--images", type=Path, help="a dataset folder (default: the dev set)")
    ap.add_argument("--max-images", type=int, default=16)
    ap.add_argument("--db", help="an empty PostgreSQL database per run (default: a throwaway server here)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    data = args.images or dev_data_dir()
    if data is None:
        raise SystemExit("no images: give --images DIR (or set DERMASEG_DEV_DATA)")
    images = sorted((data / "images").glob("*"))[: args.max_images] or sorted(data.glob("*.*"))[: args.max_images]
    rows = []
    from postgres_cluster import PostgresCluster  # tests/: a throwaway server on 127.0.0.1

    with PostgresCluster.create() as cluster:
        for n in args.annotators:
            url = args.db or cluster.create_database(f"team_load_{n}")
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run(url, images, n, args.seconds, Path(tmp)))
    print(f"{'annotators':>10} {'saves/s':>8} " + " ".join(f"{op + ' p50/p95 ms':>22}" for op in OPERATIONS) + "  lost")
    for r in rows:
        lat = " ".join(
            f"{r['latency_ms'][op]['p50_ms']:>12.1f} / {r['latency_ms'][op]['p95_ms']:<7.1f}" for op in OPERATIONS
        )
        print(f"{r['annotators']:>10} {r['saves_per_s']:>8} {lat}  {len(r['lost'])}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(r["lost"] or r["over_assigned_images"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
