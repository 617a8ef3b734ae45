"""Load test of the page through gradio_client: N concurrent sessions, loopback only, bounded.

    python -m devtools.load_test [--sessions 1 2 4 8] [--prompts 20] [--images DIR] [--json OUT]

Starts `dermaseg serve` in a subprocess on a free 127.0.0.1 port, on a temporary project holding dev
images (default: the shared dev set). For each N, N sessions (one gradio_client each, each on its own
image, new images for every N) open their image, then send `--prompts` boxes at once. It prints prompt
latency (round trip through the API, median and p95) and the server's resident memory against N, and
checks isolation: every answer must show the session's own image (its pixel hash is in the image URL),
echo the session's own box, and carry an outline that matches what the engine gives locally for that
image and box (IoU), better than for any other session's image. It stops by itself: the number of
prompts is bounded and each level has a time limit. Nothing leaves 127.0.0.1.

The helpers `start_server`, `free_port` and `install_audit` are shared with the fault and security tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # gradio_client's huggingface_hub would look up huggingface.co

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MIN_ISOLATION_IOU = 0.95  # own outline vs the engine's mask (the page simplifies outlines at 1 px)


# --------------------------------------------------------------------------------------------------
# a `dermaseg serve` subprocess


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def install_audit(log_path: str) -> None:
    """Record every socket connect / name lookup to a non-loopback destination in `log_path` (one per line).

    Meant for a server process: `python -c "...install_audit(p); main([...])"`. Audit hooks cannot be removed.
    """

    def outside(host: object) -> bool:
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host is None or (isinstance(host, str) and (host in LOOPBACK_HOSTS or host.startswith("127."))):
            return False
        return not (isinstance(host, str) and host.startswith("/"))  # a Unix socket path is local

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.getaddrinfo":
            host = args[0]
        elif event == "socket.connect":
            addr = args[1]
            host = addr[0] if isinstance(addr, tuple) else addr
        else:
            return
        if outside(host):
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(f"{event} {host!r}\n")

    sys.addaudithook(hook)


@dataclass
class Server:
    """A running `dermaseg serve` subprocess."""

    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident memory now (Linux /proc; 0 where unavailable)."""
        return _proc_status_kb(self.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        return _proc_status_kb(self.pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def wait_idle(self, timeout_s: float = 20.0, window_s: float = 0.4, busy_s: float = 0.05) -> None:
        """Wait until the server uses (almost) no CPU, e.g. when background encoding has finished."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            before = self.cpu_seconds()
            time.sleep(window_s)
            if self.cpu_seconds() - before < busy_s:
                return

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would stop it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _proc_status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def server_cache(models_dir: Path, folder: Path) -> Path:
    """A private cache folder for a server (embeddings, page files) that uses the built models in `models_dir`."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "models"
    if not link.exists():
        link.symlink_to(models_dir.resolve(), target_is_directory=True)
    return folder


def start_server(
    project: Path,
    cache_dir: Path,
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    audit_log: Path | None = None,
    timeout_s: float = 120.0,
    prefix: Sequence[str] = (),
) -> Server:
    """Run `dermaseg serve --project PROJECT` on 127.0.0.1 and wait until the page answers.

    audit_log: install `install_audit` in the server process first (records outside destinations there).
    prefix: a command that runs the server (e.g. strace ...); `Server.proc` is then that command's process.
    """
    port = port or free_port()
    argv = ["serve", "--project", str(project), "--port", str(port), "--cache-dir", str(cache_dir), *extra_args]
    code = "import sys\n"
    if audit_log is not None:
        code += f"from devtools.load_test import install_audit; install_audit({str(audit_log)!r})\n"
    code += f"from dermaseg.webui.cli.main import main; sys.exit(main({argv!r}))\n"
    penv = {**os.environ, **(env or {})}
    penv["GRADIO_TEMP_DIR"] = str(cache_dir / "webui" / "gradio")
    penv["NO_PROXY"] = penv["no_proxy"] = "127.0.0.1,localhost"
    log = cache_dir / f"serve-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([*prefix, sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=penv)
    server = Server(proc, f"http://{LOOPBACK}:{port}/", log)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dermaseg serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with opener.open(server.url + "config", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"dermaseg serve did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


# --------------------------------------------------------------------------------------------------
# the load test


@dataclass(frozen=True)
class Case:
    """One session's image: its file, pixel hash, size and the boxes it will send."""

    path: Path
    sha256: str
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]


@dataclass
class Level:
    """Figures for one number of concurrent sessions."""

    sessions: int
    prompts: int = 0
    open_median_ms: float = 0.0
    median_ms: float = 0.0
    p95_ms: float = 0.0
    max_ms: float = 0.0
    throughput_per_s: float = 0.0
    rss_mib: float = 0.0
    idle_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    min_own_iou: float = 1.0
    max_other_iou: float = 0.0
    isolation_ok: bool = True
    problems: list[str] = field(default_factory=list)


def dev_dir() -> Path | None:
    """The shared dev set (`dermaseg.core.evaluation.dataset.dev_data_dir`)."""
    from dermaseg.core.evaluation.dataset import dev_data_dir

    return dev_data_dir()


def make_cases(images_dir: Path, count: int, prompts: int, seed: int = 0) -> list[Case]:
    """`count` distinct images of a dataset folder, each with `prompts` jittered boxes around its lesion."""
    from dermaseg.core.evaluation.dataset import box_from_mask, read_dataset
    from dermaseg.core.image import load_image

    rng = random.Random(seed)
    cases: list[Case] = []
    seen: set[str] = set()
    for c in read_dataset(images_dir):
        if len(cases) == count:
            break
        image = load_image(c.image)
        if image.sha256 in seen:
            continue
        seen.add(image.sha256)
        x0, y0, x1, y1 = box_from_mask(c.load_mask(), margin=0)
        boxes = []
        for _ in range(prompts):
            m = [rng.uniform(0, 25) for _ in range(4)]
            boxes.append(
                (
                    round(max(0.0, x0 - m[0]), 1),
                    round(max(0.0, y0 - m[1]), 1),
                    round(min(image.width, x1 + m[2]), 1),
                    round(min(image.height, y1 + m[3]), 1),
                )
            )
        cases.append(Case(c.image, image.sha256, image.width, image.height, tuple(boxes)))
    if len(cases) < count:
        raise SystemExit(f"{images_dir}: only {len(cases)} distinct images, {count} needed")
    return cases


def expected_masks(cases: Sequence[Case], cache_dir: Path) -> dict[tuple[str, int], Any]:
    """What the engine gives locally for each (image, box index): the reference for isolation."""
    from dermaseg.core.image import load_image
    from dermaseg.core.segment.prompts import Prompts
    from dermaseg.core.segment.segmenter import Engine
    from dermaseg.core.settings import Settings

    engine = Engine.open(Settings.from_env(cache_dir=cache_dir, backend="onnx"))
    seg = engine.segmenter()
    out = {}
    for c in cases:
        seg.set_image(load_image(c.path))
        for i, box in enumerate(c.boxes):
            out[(c.sha256, i)] = seg.predict(Prompts().with_box(box)).mask
    return out


def _iou(a: Any, b: Any) -> float:
    if a.shape != b.shape:
        return 0.0
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _session(
    url: str, case: Case, image_id: int, opened: threading.Barrier, go: threading.Event, max_s: float, out: dict
) -> None:
    """One client: open its image, wait for the go, then send its boxes; views and times kept in `out`."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    t = time.perf_counter()
    client.predict(image_id, api_name="/open_image")
    out["open_ms"] = 1000 * (time.perf_counter() - t)
    opened.wait(timeout=300)
    go.wait(timeout=300)
    deadline = time.monotonic() + max_s
    out["views"], out["ms"] = [], []
    for box in case.boxes:
        if time.monotonic() > deadline:
            out["timed_out"] = True
            break
        t = time.perf_counter()
        view = client.predict(*box, api_name="/box")
        out["ms"].append(1000 * (time.perf_counter() - t))
        out["views"].append(json.loads(view))
    if hasattr(client, "close"):
        client.close()


def check_isolation(level: Level, cases: Sequence[Case], results: Sequence[dict[str, Any]], expected: dict) -> None:
    """Every view of session k must be of case k's image and box; its outline must match case k best."""
    from dermaseg.core.annotation.geometry import Polygons, polygons_to_mask

    for k, (case, res) in enumerate(zip(cases, results, strict=True)):
        for i, view in enumerate(res.get("views", [])):
            where = f"session {k} prompt {i}"
            img = view.get("image") or {}
            if case.sha256[:24] not in str(img.get("src")) or (img.get("width"), img.get("height")) != (
                case.width,
                case.height,
            ):
                level.problems.append(f"{where}: shows another image ({img.get('src')})")
                continue
            if (view.get("prompts") or {}).get("box") != list(case.boxes[i]):
                level.problems.append(f"{where}: box {view.get('prompts')} is not the one sent {case.boxes[i]}")
            parts = view.get("polygons") or []
            mask = polygons_to_mask(
                Polygons.from_json({"width": case.width, "height": case.height, "parts": parts}),
                case.height,
                case.width,
            )
            own = _iou(mask, expected[(case.sha256, i)])
            others = [_iou(mask, expected[(c.sha256, i)]) for c in cases if c.sha256 != case.sha256]
            level.min_own_iou = min(level.min_own_iou, own)
            level.max_other_iou = max([level.max_other_iou, *others])
            if own < MIN_ISOLATION_IOU or any(o >= own for o in others):
                level.problems.append(f"{where}: outline IoU {own:.3f} with its own image, others {others}")
        if res.get("error"):
            level.problems.append(f"session {k}: {res['error']}")
    level.isolation_ok = not level.problems


def run(
    sessions: Sequence[int] = (1, 2, 4, 8),
    prompts: int = 20,
    images_dir: Path | None = None,
    models_dir: Path | None = None,
    memory_cache_bytes: int | None = None,
    max_seconds_per_level: float = 120.0,
    workdir: Path | None = None,
) -> list[Level]:
    """Run the load test; returns one `Level` per entry of `sessions`."""
    from dermaseg.core.annotation.project import Project
    from dermaseg.core.settings import Settings

    images_dir = images_dir or dev_dir()
    if images_dir is None:
        raise SystemExit("no dev images: pass --images DIR or set DERMASEG_DEV_DATA")
    models_dir = models_dir or Settings.from_env().models_dir
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="dermaseg-load-")) if workdir is None else workdir
    try:
        cache = server_cache(models_dir, work / "cache")
        project_dir = work / "project"
        project_dir.mkdir(parents=True, exist_ok=True)
        cases = make_cases(images_dir, sum(sessions), prompts)
        for i, c in enumerate(cases):  # numbered: the project lists them in this order
            shutil.copy(c.path, project_dir / f"{i:03d}-{c.path.name}")
        with Project.init(project_dir) as p:
            ids = [r.id for r in p.images()]
        expected = expected_masks(cases, cache)
        env = {"DERMASEG_MEMORY_CACHE_BYTES": str(memory_cache_bytes)} if memory_cache_bytes else {}
        server = start_server(project_dir, cache, env=env)
        levels: list[Level] = []
        try:
            idle = server.rss_bytes() / 2**20
            first = 0
            for n in sessions:
                mine, mine_ids = cases[first : first + n], ids[first : first + n]
                first += n
                levels.append(_run_level(server, mine, mine_ids, expected, max_seconds_per_level))
                levels[-1].idle_rss_mib = idle
        finally:
            server.stop()
        return levels
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def _run_level(server: Server, cases: Sequence[Case], ids: Sequence[int], expected: dict, max_s: float) -> Level:
    n = len(cases)
    level = Level(n)
    opened, go = threading.Barrier(n + 1), threading.Event()
    results: list[dict[str, Any]] = [{} for _ in range(n)]

    def guarded(k: int) -> None:
        try:
            _session(server.url, cases[k], ids[k], opened, go, max_s, results[k])
        except Exception as e:  # noqa: BLE001 - reported as a problem of this level
            results[k]["error"] = f"{type(e).__name__}: {e}"
            opened.abort()
            go.set()

    threads = [threading.Thread(target=guarded, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    try:
        opened.wait(timeout=300)  # every session has opened its image
        server.wait_idle()  # background encoding of the next images has finished
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join(timeout=max_s + 30)
    wall = time.perf_counter() - t0
    ms = [x for r in results for x in r.get("ms", [])]
    level.prompts = len(ms)
    if ms:
        q = statistics.quantiles(ms, n=20, method="inclusive") if len(ms) > 1 else [ms[0]] * 19
        level.median_ms, level.p95_ms, level.max_ms = statistics.median(ms), q[18], max(ms)
        level.throughput_per_s = len(ms) / wall if wall > 0 else 0.0
    opens = [r["open_ms"] for r in results if "open_ms" in r]
    level.open_median_ms = statistics.median(opens) if opens else 0.0
    level.rss_mib = server.rss_bytes() / 2**20
    level.peak_rss_mib = server.peak_rss_bytes() / 2**20
    if any(r.get("timed_out") for r in results):
        level.problems.append(f"time limit of {max_s:.0f} s reached")
    check_isolation(level, cases, results, expected)
    return level


def table(levels: Sequence[Level], memory_cache_bytes: int | None) -> str:
    """The figures as a Markdown table."""
    cache = f"{(memory_cache_bytes or 256 * 2**20) / 2**20:.0f} MiB embedding memory cache"
    if levels:
        cache += f", server RSS {levels[0].idle_rss_mib:.0f} MiB when idle"
    rows = [
        f"Prompt round trip through the API (gradio_client, `/box`), {cache}",
        "",
        "| sessions | prompts | open image (median ms) | prompt median ms | p95 ms | prompts/s | server RSS MiB "
        "| peak RSS MiB | isolation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        iso = f"ok (own IoU ≥ {lv.min_own_iou:.3f}, others ≤ {lv.max_other_iou:.3f})" if lv.isolation_ok else "FAILED"
        rows.append(
            f"| {lv.sessions} | {lv.prompts} | {lv.open_median_ms:.0f} | {lv.median_ms:.0f} | {lv.p95_ms:.0f} "
            f"| {lv.throughput_per_s:.1f} | {lv.rss_mib:.0f} | {lv.peak_rss_mib:.0f} | {iso} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.load_test", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent sessions per level")
    ap.add_argument("--prompts", type=int, default=20, help="boxes sent by each session (bounded)")
    ap.add_argument("--images", type=Path, help="dataset folder (manifest.csv or images/ + masks/)")
    ap.add_argument("--memory-cache-mb", type=int, help="server's embedding memory cache bound (default 256)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time limit of each level")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= 500 or not all(1 <= n <= 32 for n in args.sessions):
        ap.error("--prompts must be 1-500 and --sessions 1-32")
    mem = args.memory_cache_mb * 2**20 if args.memory_cache_mb else None
    levels = run(
        args.sessions, args.prompts, args.images, memory_cache_bytes=mem, max_seconds_per_level=args.max_seconds
    )
    print(table(levels, mem))
    for lv in levels:
        for p in lv.problems[:10]:
            print(f"N={lv.sessions}: {p}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([asdict(lv) for lv in levels], indent=2))
    return 0 if all(lv.isolation_ok for lv in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
