"""Offline for real: nothing leaves this computer, native libraries included, as the kernel sees it.

The page's own test (tests/webui/test_page_security.py) hooks Python's sockets; ONNX Runtime's telemetry is
C++ and slipped past it (DNS look-ups of mobile.events.data.microsoft.com every 6-8 s, a device id under
~/.cache/Microsoft). Here a whole `dermaseg serve` session runs under `strace -f -e trace=network` (Debian's
strace), and every destination of connect/sendto/sendmsg/sendmmsg must be loopback or a local socket; any
DNS query fails the test, to a loopback resolver too. The controls run the libraries without dermaseg under
strace's fault injection (the calls are logged, never made): they prove the check sees native look-ups.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from devtools import load_test
from gradio_client import Client

from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.gesture_route import PATH

STRACE = "/usr/bin/strace"
IDLE_S = 15.0  # ONNX Runtime looked up its telemetry host at start and every 6-8 s
SENDS = re.compile(r"\b(?:connect|sendto|sendmsg|sendmmsg)\(")
LOCAL_FAMILIES = {"AF_UNIX", "AF_LOCAL", "AF_NETLINK", "AF_UNSPEC"}  # a file, the kernel, a disconnect
# An address inside one sockaddr as strace prints it: {sa_family=AF_INET, sin_port=htons(53), sin_addr=...}
PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
DNS_PORT = 53
# Both runtimes switch their telemetry off by themselves in a CI job (onnxruntime's native library reads these
# names; openvino-telemetry reads CI, TF_BUILD and JENKINS_URL), so with them set every check here would pass
# for nothing and the controls fail: the tests run as on a user's machine.
CI_MARKERS = (
    "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
    "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
)  # fmt: skip


@pytest.fixture(autouse=True)
def as_on_a_users_machine(monkeypatch):
    """Every traced program runs without the variables that tell the runtimes they are in a CI job."""
    for name in CI_MARKERS:
        monkeypatch.delenv(name, raising=False)


def strace_or_skip() -> str:
    if not Path(STRACE).exists():
        pytest.skip("Debian's strace is not installed (apt-get install -y strace)")
    if subprocess.run([STRACE, "-f", "-o", "/dev/null", "true"], capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace is not permitted)")
    return STRACE


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def outside_traffic(trace: str) -> list[str]:
    """The lines of an `strace -f -e trace=network` log that reach beyond this computer: a connect or send to
    an IPv4/IPv6 address that is not loopback, to an unknown socket family, or any DNS query (port 53)."""
    found = []
    for line in trace.splitlines():
        if not SENDS.search(line):
            continue
        for sockaddr in line.split("sa_family=")[1:]:
            family = re.match(r"\w+", sockaddr).group()
            if family in LOCAL_FAMILIES:
                continue
            port, address = PORT.search(sockaddr), ADDRESS.search(sockaddr)
            if (
                family not in ("AF_INET", "AF_INET6")
                or port is None
                or address is None
                or int(port.group(1)) == DNS_PORT
                or not is_loopback(address.group(1) or address.group(2))
            ):
                found.append(line)
                break
    return found


def telemetry_files(home: Path) -> list[Path]:
    """Files the runtimes' telemetry writes in a home folder (ONNX Runtime's device id, OpenVINO's client id)."""
    return [p for d in (home / ".cache" / "Microsoft", home / "intel") if d.exists() for p in d.rglob("*")]


def traced(trace: Path, inject: bool = False) -> list[str]:
    """strace's command line: every process, network calls, to `trace`; inject: make each connect and send
    fail instead (logged with its destination, never sent)."""
    argv = [strace_or_skip(), "-f", "-e", "trace=network", "-o", str(trace)]
    return [*argv, "-e", "inject=connect,sendto,sendmsg,sendmmsg:error=ENETUNREACH"] if inject else argv


def private_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    return home, {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


def run_until_outside(argv: list[str], trace: Path, env: dict[str, str], timeout_s: float) -> list[str]:
    """Run `argv` (under strace) until its trace shows outside traffic or `timeout_s` passes."""
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end, found = time.monotonic() + timeout_s, []
    try:
        while time.monotonic() < end and proc.poll() is None and not found:
            time.sleep(0.5)
            found = outside_traffic(trace.read_text()) if trace.exists() else []
    finally:
        stop_traced(proc)
    return found or outside_traffic(trace.read_text())


def stop_traced(proc: subprocess.Popen) -> None:
    """Stop a program run under strace: strace waits for its tracees, so they are stopped first."""
    for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
        child.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(timeout=30)


def test_the_check_reads_strace_as_it_should():
    lines = {
        'connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0': True,
        'connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.53")}, 16) = 0': True,
        "connect(9, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "
        '"2606:4700::1", &sin6_addr), sin6_scope_id=0}, 28 <unfinished ...>': True,
        'sendto(5, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("93.184.215.14")}, 16)': True,
        "sendmsg(3, {msg_name={sa_family=AF_PACKET, sll_protocol=htons(ETH_P_ALL)}, ...}, 0) = 1": True,
        'connect(12, {sa_family=AF_INET, sin_port=htons(7860), sin_addr=inet_addr("127.0.0.1")}, 16) = 0': False,
        "connect(12, {sa_family=AF_INET6, sin6_port=htons(7860), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "
        '"::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0': False,
        'connect(4, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT': False,
        "sendto(3, [{nlmsg_len=20, nlmsg_type=RTM_GETADDR}], 20, 0, {sa_family=AF_NETLINK, nl_pid=0}, 12) = 20": False,
        'sendto(8, "\\335\\177\\1\\0", 50, MSG_NOSIGNAL, NULL, 0) = 50': False,  # its connect is what counts
        'bind(7, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("0.0.0.0")}, 16) = 0': False,
    }
    for line, outside in lines.items():
        assert bool(outside_traffic(f"4242 {line}")) == outside, line


@pytest.mark.slow
def test_onnx_runtime_left_alone_looks_up_its_telemetry_host(models_dir, tmp_path):
    """The control: without dermaseg, ONNX Runtime's C++ telemetry does what the issue found (strace sees it)."""
    home, env = private_home(tmp_path)
    code = (
        "import onnxruntime as ort, time\n"
        f"ort.InferenceSession({str(models_dir / 'decoder-fp32.onnx')!r}, providers=['CPUExecutionProvider'])\n"
        "time.sleep(60)\n"
    )
    env["ORT_DISABLE_TELEMETRY"] = "0"
    trace = tmp_path / "ort.trace"
    found = run_until_outside([*traced(trace, inject=True), sys.executable, "-c", code], trace, env, timeout_s=40)
    assert found and any("htons(53)" in line for line in found)
    assert any(p.name == "deviceid" for p in telemetry_files(home))


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
@pytest.mark.parametrize("dermaseg_first", [False, True], ids=["control", "dermaseg-first"])
def test_openvino_telemetry_is_off_when_dermaseg_loads_first(dermaseg_first: bool, tmp_path):
    home, env = private_home(tmp_path)
    code = ("import dermaseg.core\n" if dermaseg_first else "") + "import openvino, time\ntime.sleep(3)\n"
    trace = tmp_path / "ov.trace"
    found = run_until_outside([*traced(trace, inject=True), sys.executable, "-c", code], trace, env, timeout_s=60)
    if dermaseg_first:
        assert found == [] and telemetry_files(home) == []
    else:  # what openvino-telemetry does unless opted out: a look-up and a client id in ~/intel
        assert found and telemetry_files(home)


@pytest.mark.slow
def test_a_whole_session_under_strace_stays_on_this_computer(dev_folder, models_dir, tmp_path):
    """Open an image, a click, a box, an outline edit on the fast path, accept, export, idle: under strace."""
    project_dir = tmp_path / "project"
    cases = dev_folder(project_dir, 3)
    home, env = private_home(tmp_path)
    env["ORT_DISABLE_TELEMETRY"] = "0"  # a user's setting does not turn the telemetry back on
    trace = tmp_path / "network.trace"
    cache = load_test.server_cache(models_dir, tmp_path / "cache")
    server = load_test.start_server(project_dir, cache, env=env, prefix=traced(trace))
    try:
        client = Client(server.url, verbose=False, download_files=False)
        view = json.loads(client.predict(api_name="/load")[0])
        expert = next(c for c in cases if view["message"].startswith(c.image.name)).load_mask()
        ys, xs = np.nonzero(expert)
        client.predict(float(xs[len(xs) // 2]), float(ys[len(ys) // 2]), True, api_name="/click")
        view = json.loads(client.predict(*box_from_mask(expert, margin=8), api_name="/box"))
        body = {"channel": view["channel"], "gesture": {"type": "edit", "polygons": view["polygons"], "seq": 5}}
        request = urllib.request.Request(
            server.url + PATH.lstrip("/"), json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            assert json.loads(r.read())["message"].startswith("outline edited")
        client.predict("lesion", "Dr Offline", api_name="/accept")
        for name in ("/export_image", "/export_project"):
            for f in client.predict(api_name=name):
                assert httpx.get(server.url + "gradio_api/file=" + f["path"]).status_code == 200
        time.sleep(IDLE_S)
    finally:
        stop_traced(server.proc)
    text = trace.read_text()
    assert "127.0.0.1" in text and "accept" in text  # the trace followed the server (it listened and answered)
    assert outside_traffic(text) == [], "\n".join(outside_traffic(text)[:10])
    assert telemetry_files(home) == []
