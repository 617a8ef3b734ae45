"""Security of the page and its API (the core/CLI side is tests/hardening/test_security.py).

- Binding: 127.0.0.1 by default; another interface needs --auth (no default password); `serve` says who
  can reach the page; a login, when set, is enforced on every route (dermaseg's gesture route too), and
  failed logins are slowed, then refused, per client address.
- Paths: every API endpoint that takes a string or a file is attacked with `..`, absolute paths,
  symlinks and URLs; Gradio's own file routes are asked for files outside the allowed folders. Nothing
  outside the project (or Gradio's upload folder) is read, written or fetched; the launch settings are tight.
- Limits: uploads above the size limit and images above the pixel limit get a clear message.
- Offline: a whole scripted session in a real `dermaseg serve` process makes zero connections or
  name lookups beyond loopback (Python audit hook in the server), attacks that ask it to fetch URLs included;
  native libraries are watched under strace in tests/hardening/test_offline.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from devtools import load_test
from gradio_client import Client, handle_file
from PIL import Image

from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.cli.main import main
from dermaseg.webui.gesture_route import PATH as GESTURE_PATH
from dermaseg.webui.login import LoginLimits

SECRET = "dermaseg-secret-outside-the-project"
MAX_UPLOAD = "300kb"
MAX_PIXELS = 2_000_000

# Every API endpoint whose inputs include a string or a file, and how it is attacked. A new endpoint
# taking a string or file fails `test_every_string_or_file_endpoint_is_attacked` until it is listed here.
STRING_OR_FILE_ENDPOINTS = {
    "/open_image",
    "/upload",
    "/gesture",
    "/head",
    "/accept",
    "/labels",
    "/select_lesion",
    "/confirm",
    "/conflict_reload",
    "/conflict_keep_both",
}


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder outside the project with a secret text file and a secret image."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "secret.txt").write_text(SECRET)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "secret.png")
    return folder


@pytest.fixture(scope="module")
def site(engine, project, project_dir, outside, tmp_path_factory):
    """The app in-process with tight limits, a symlink to outside in the project, and a client."""
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    (project_dir / "link-out.png").symlink_to(outside / "secret.png")
    project.scan()
    settings = Settings.from_env(cache_dir=tmp_path_factory.mktemp("sec-cache"), max_pixels=MAX_PIXELS)
    app = build_app(engine, project, settings)
    url = launch(app, block=False, quiet=True, max_file_size=MAX_UPLOAD)
    client = Client(url, verbose=False, download_files=False)
    yield app, url, client
    app.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def traversals(outside: Path, project_dir: Path) -> list[str]:
    rel = os.path.relpath(outside / "secret.txt", project_dir)
    return [
        str(outside / "secret.txt"),
        str(outside / "secret.png"),
        rel,
        "../" * 12 + "etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        str(project_dir / "link-out.png"),
        "link-out.png",
        "http://example.com/x.png",
    ]


# --------------------------------------------------------------------------------------------------
# binding and login


def test_non_loopback_needs_auth_and_no_default_password(tmp_path, capsys):
    for argv in (["--host", "0.0.0.0"], ["--host", "192.168.1.20"], ["--host", "::"]):
        assert main(["serve", "--project", str(tmp_path / "p"), *argv]) == 2
        assert "--auth" in capsys.readouterr().err
    for weak in ("user", "user:", ":password123", "user:short"):
        assert main(["serve", "--host", "0.0.0.0", "--auth", weak, "--project", str(tmp_path / "p")]) == 2
        assert "at least 8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "host", "auth", "says"),
    [
        ([], "127.0.0.1", None, "reachable from this computer, not from the network"),
        (["--host", "localhost"], "localhost", None, "not from the network"),
        (["--host", "0.0.0.0", "--auth", "ann:correct-horse"], "0.0.0.0", ("ann", "correct-horse"), "log in as 'ann'"),
    ],
)
def test_serve_binds_and_says_who_can_reach_it(argv, host, auth, says, models_dir, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_launch(app, **kw):
        seen.update(kw)
        app.close()
        return "http://x/"

    monkeypatch.setattr("dermaseg.webui.page.app.launch", fake_launch)
    cache = load_test.server_cache(models_dir, tmp_path / "cache")
    assert main(["serve", "--project", str(tmp_path / "p"), "--cache-dir", str(cache), *argv]) == 0
    assert seen["host"] == host and seen["auth"] == auth
    assert says in capsys.readouterr().out


def test_login_is_enforced_when_set(engine, project, tmp_path):
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path))
    url = launch(app, block=False, quiet=True, auth=("ann", "correct-horse"))
    try:
        for route in ("config", "gradio_api/info", f"gradio_api/file={tmp_path}"):
            assert httpx.get(url + route).status_code in (401, 403)
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            Client(url, verbose=False).predict(api_name="/clear")
        assert Client(url, auth=("ann", "correct-horse"), verbose=False).view_api(print_info=False) is None
    finally:
        app.close()


LOGIN = ("ann", "correct-horse")
LIMITS = LoginLimits(free=2, delay_s=0.3, max_delay_s=0.6, lockout_after=4, lockout_s=3.0)


@pytest.fixture(scope="module")
def guarded(engine, project, tmp_path_factory):
    """The app with a login (`serve --auth`) and small login limits; yields (url, a logged-in client)."""
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path_factory.mktemp("guarded")))
    url = launch(app, block=False, quiet=True, auth=LOGIN, login_limits=LIMITS)
    yield url, Client(url, auth=LOGIN, verbose=False)
    app.close()


def http_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.x.y.z reaches the server on 127.0.0.1)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def login(http: httpx.Client, url: str, password: str) -> tuple[int, str, float]:
    """POST Gradio's login form: (status, text, seconds taken)."""
    t0 = time.monotonic()
    r = http.post(url + "login", data={"username": LOGIN[0], "password": password})
    return r.status_code, r.text, time.monotonic() - t0


def test_the_gesture_route_needs_the_same_login(guarded, project):
    """It answered 200 with the outline and the image's path to anyone holding a channel, --auth or not."""
    url, client = guarded
    channel = json.loads(client.predict(project.images()[0].id, api_name="/open_image")[0])["channel"]
    box = {"channel": channel, "gesture": {"type": "box", "box": [10, 10, 200, 150], "seq": 3}}
    click = {"channel": channel, "gesture": {"type": "click", "x": 50, "y": 40, "positive": True, "seq": 4}}
    with http_from("127.0.0.9") as http:
        r = http.post(url + GESTURE_PATH.lstrip("/"), json=box)
        assert r.status_code == 401 and "log in" in r.json()["error"] and channel not in r.text
        stranger = {f"access-token-unsecure-{'x' * 43}": "forged", "access-token": "forged"}
        assert http.post(url + GESTURE_PATH.lstrip("/"), json=box, cookies=stranger).status_code == 401
        assert login(http, url, LOGIN[1])[0] == 200  # the session cookie, as the page holds it
        r = http.post(url + GESTURE_PATH.lstrip("/"), json=click)
    view = json.loads(r.text.splitlines()[-1])  # a click alone: its preview's line, then the view
    assert r.status_code == 200 and view["channel"] == channel and view["ack"] == 4
    assert view["prompts"]["box"] is None  # the refused box never reached the session


def test_failed_logins_are_slowed_then_refused_per_client(guarded):
    url, _ = guarded
    with http_from("127.0.0.2") as guesser, http_from("127.0.0.3") as other:
        answers = [login(guesser, url, f"wrong-{i}") for i in range(LIMITS.lockout_after)]
        assert [a[0] for a in answers] == [400] * LIMITS.lockout_after
        for (_, _, took), failures in zip(answers, range(1, LIMITS.lockout_after + 1), strict=True):
            assert took >= LIMITS.delay(failures) * 0.95  # 0, 0, 0.3, 0.6 s
        status, text, _ = login(guesser, url, LOGIN[1])  # locked: even the right password waits
        assert status == 429 and "too many failed logins from 127.0.0.2" in text and "try again in" in text
        assert int(guesser.post(url + "login", data={"username": "x", "password": "y"}).headers["Retry-After"]) > 0
        assert login(other, url, LOGIN[1])[0] == 200  # another address is not affected
        assert login(other, url, "wrong")[0] == 400  # ... and its count started afresh
        time.sleep(LIMITS.lockout_s)
        assert login(guesser, url, LOGIN[1])[0] == 200  # the lock ends; a success clears the count
        status, _, took = login(guesser, url, "wrong-again")
        assert status == 400


def test_guesses_sent_together_are_limited_together(guarded):
    """The issue's 200 guesses at once: the first `lockout_after` are answered (slowed), every other one 429."""
    url, _ = guarded
    with http_from("127.0.0.4") as http, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda i: login(http, url, f"guess-{i}")[0], range(40)))
    assert sorted(statuses) == [400] * LIMITS.lockout_after + [429] * (40 - LIMITS.lockout_after)


def test_the_login_page_states_the_limits(guarded):
    r = httpx.get(guarded[0] + "config")  # what the login page reads before anyone logged in
    assert r.status_code == 401 and r.json()["detail"]["auth_message"] == LIMITS.notice()
    assert "after 4" in LIMITS.notice() and "3 s" in LIMITS.notice()


# --------------------------------------------------------------------------------------------------
# paths: API endpoints


def test_every_string_or_file_endpoint_is_attacked(site):
    api = site[2].view_api(print_info=False, return_format="dict")["named_endpoints"]
    takes = set()
    for name, ep in api.items():
        for p in ep["parameters"]:
            kind = json.dumps(p.get("type", {}))
            if '"string"' in kind or "FileData" in kind or p.get("python_type", {}).get("type") in ("str", "filepath"):
                takes.add(name)
    print(f"\nendpoints: {len(api)}; taking a string or file: {sorted(takes)}")
    assert takes <= STRING_OR_FILE_ENDPOINTS, f"not attacked yet: {takes - STRING_OR_FILE_ENDPOINTS}"


def test_string_endpoints_never_reach_outside(site, project, project_dir, outside):
    _, _, client = site
    before_out, before_proj = snapshot(outside), snapshot(project_dir / ".dermaseg")
    n_images = len(project.images())
    for bad in traversals(outside, project_dir):
        results = []
        for name, args in (
            ("/open_image", (bad,)),
            ("/head", (bad,)),
            ("/accept", (bad, bad)),
            ("/labels", (bad,)),
            ("/select_lesion", (bad,)),
            ("/confirm", (bad, bad)),
            ("/conflict_keep_both", (bad, bad)),
            ("/gesture", (json.dumps({"kind": "gesture", "type": "click", "x": bad, "y": bad}),)),
            ("/gesture", (json.dumps({"kind": "gesture", "type": "edit", "polygons": bad}),)),
            ("/gesture", (bad,)),
        ):
            try:
                results.append(json.dumps(client.predict(*args, api_name=name)))
            except Exception as e:  # noqa: BLE001 - a refusal is fine; a leak is not
                results.append(str(e))
        assert not any(SECRET in r or "root:x:0:0" in r for r in results), bad
    assert snapshot(outside) == before_out
    assert [r.path for r in project.images()][:n_images] == [r.path for r in project.images()][:n_images]
    assert not any("secret" in r.path or r.path == "link-out.png" for r in project.images())
    assert project.integrity_check() == "ok" and snapshot(project_dir / ".dermaseg").keys() >= before_proj.keys()
    client.predict(project.labels()[0] + ", naevus", api_name="/labels")  # the labels attack may have won: fine
    assert json.loads(client.predict(api_name="/clear"))["kind"] == "view"  # still serving


def test_upload_takes_only_files_sent_by_the_browser(site, project, project_dir, outside, tmp_path):
    app, url, client = site
    upload_dir = Path(os.environ["GRADIO_TEMP_DIR"])
    upload_dir.mkdir(parents=True, exist_ok=True)
    link = upload_dir / "planted-link.png"
    link.unlink(missing_ok=True)
    link.symlink_to(outside / "secret.png")  # a symlink inside the upload folder that leads outside
    attacks = [*traversals(outside, project_dir), str(link), str(upload_dir / ".." / ".." / "secret.png")]
    for bad in attacks:
        payload = {"path": bad, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
        text = raw_call(url, "upload", [payload])  # not gradio_client: it would upload the file itself
        assert "event: error" in text and SECRET not in text and "root:x" not in text, (bad, text)
    assert not any("secret" in r.path for r in project.images())
    assert not (project_dir / "uploads").exists() or not any(
        "secret" in p.name for p in (project_dir / "uploads").iterdir()
    )
    link.unlink()


def raw_call(url: str, api_name: str, data: list) -> str:
    """Call an endpoint with exactly this JSON (Gradio's /call API); returns the event stream's text."""
    r = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    r.raise_for_status()
    return httpx.get(f"{url}gradio_api/call/{api_name}/{r.json()['event_id']}", timeout=60).text


# --------------------------------------------------------------------------------------------------
# paths: Gradio's own file routes


def test_gradio_file_routes_refuse_everything_outside(site, project, project_dir, outside):
    app, url, client = site
    view = json.loads(client.predict(project.images()[0].id, api_name="/open_image")[0])
    views_dir = Path(view["image"]["src"].split("file=", 1)[1]).parent
    assert httpx.get(url + view["image"]["src"]).status_code == 200  # control: the page's own image
    (views_dir / "planted.jpg").unlink(missing_ok=True)
    (views_dir / "planted.jpg").symlink_to(outside / "secret.txt")  # inside an allowed folder, leads outside
    targets = [
        *traversals(outside, project_dir),
        str(project_dir / project.images()[0].path),
        str(project.db_path),
        f"{views_dir}/../../../{os.path.relpath(outside / 'secret.txt', views_dir.parent.parent.parent)}",
        str(views_dir / "planted.jpg"),
        "//example.com/x.png",
        "https://example.com/x.png",
    ]
    attacked = 0
    for t in targets:
        for route in ("gradio_api/file=", "file=", "gradio_api/file/", "gradio_api/proxy="):
            for path in (t, quote(t, safe="")):
                r = httpx.get(url + route + path)
                attacked += 1
                assert r.status_code in (400, 403, 404, 405), (route, path, r.status_code)
                assert SECRET not in r.text and "root:x" not in r.text
    for route in ("static/", "assets/", "gradio_api/static/"):
        r = httpx.get(url + route + quote("../" * 10 + str(outside / "secret.txt").lstrip("/"), safe="/"))
        assert SECRET not in r.text
    print(f"\nGradio file routes: {attacked} requests refused")
    (views_dir / "planted.jpg").unlink()
    # launch settings: only the page's own folders are served
    allowed = [Path(p).resolve() for p in app.allowed_paths]
    assert allowed == [p.resolve() for p in app.dermaseg_allowed]
    for p in allowed:
        assert not p.is_relative_to(project_dir.resolve()) and not project_dir.resolve().is_relative_to(p)
        assert p.name in ("views", "exports")


# --------------------------------------------------------------------------------------------------
# limits


def noise_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_upload_size_and_pixel_limits_have_clear_messages(site, tmp_path):
    app, url, client = site
    big = tmp_path / "big.png"
    big.write_bytes(noise_png(400, 300))  # ~360 KB > 300 KB
    r = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", big.read_bytes(), "image/png")})
    assert r.status_code == 413 and "maximum" in r.text.lower()
    with pytest.raises(Exception, match="(?i)maximum|too large|413"):
        client.predict(handle_file(str(big)), api_name="/upload")

    huge = tmp_path / "huge.png"
    Image.new("RGB", (2000, 1200), (180, 120, 100)).save(huge)  # 2.4 MP > MAX_PIXELS, a few KB on disk
    view = json.loads(client.predict(handle_file(str(huge)), api_name="/upload")[0])
    assert view["message"].startswith("⚠") and "huge.png" in view["message"]
    assert "pixel" in view["message"].lower() or "MP" in view["message"] or "large" in view["message"]


# --------------------------------------------------------------------------------------------------
# offline: zero outside requests from the server process


def test_audit_hook_records_outside_lookups(tmp_path):
    log = tmp_path / "audit.log"
    code = (
        "from devtools.load_test import install_audit; import socket\n"
        f"install_audit({str(log)!r})\n"
        "socket.getaddrinfo('127.0.0.1', 80)\n"
        "try: socket.getaddrinfo('example.invalid', 80)\nexcept OSError: pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert log.read_text().splitlines() == ["socket.getaddrinfo 'example.invalid'"]


@pytest.mark.slow
def test_whole_session_makes_no_outside_request(dev_folder, models_dir, tmp_path):
    project_dir = tmp_path / "project"
    cases = dev_folder(project_dir, 2)
    log = tmp_path / "audit.log"
    cache = load_test.server_cache(models_dir, tmp_path / "cache")
    server = load_test.start_server(project_dir, cache, audit_log=log)
    try:
        client = Client(server.url, verbose=False, download_files=False)
        view = json.loads(client.predict(api_name="/load")[0])
        expert = next(c for c in cases if view["message"].startswith(c.image.name)).load_mask()
        view = json.loads(client.predict(*box_from_mask(expert, margin=8), api_name="/box"))
        ys, xs = np.nonzero(~expert)
        client.predict(float(xs[0]), float(ys[0]), False, api_name="/click")
        client.predict(api_name="/undo")
        edit = {"kind": "gesture", "type": "edit", "polygons": view["polygons"], "seq": 1}
        client.predict(json.dumps(edit), api_name="/gesture")
        client.predict(True, api_name="/heatmap")
        client.predict(0.02, api_name="/mm_per_px")
        client.predict("lesion", "Dr Offline", api_name="/accept")
        for name in ("/export_image", "/export_project"):
            for f in client.predict(api_name=name):
                assert httpx.get(server.url + "gradio_api/file=" + f["path"]).status_code == 200
        client.predict(handle_file(str(cases[1].image)), api_name="/upload")
        client.predict(api_name="/next")
        # attacks that ask the server to fetch from outside
        for route in ("gradio_api/file=https://example.com/x.png", "gradio_api/proxy=https://x.hf.space/a"):
            assert httpx.get(server.url + route).status_code == 403
        with pytest.raises(Exception, match="offline|URL"):
            client.predict(
                {"path": "https://example.com/x.png", "meta": {"_type": "gradio.FileData"}}, api_name="/upload"
            )
    finally:
        server.stop()
    assert "Running on local URL:  http://127.0.0.1:" in server.log.read_text()
    outside_requests = log.read_text().splitlines() if log.exists() else []
    assert outside_requests == []
