"""`dermaseg serve`: the annotation page on this computer.

One project folder is served by one process at a time: `serve` holds the folder's lock
(`project.FolderLock`) while it runs; a second `serve` (or a writer such as `project import-coco`) on the
same folder is refused with a message naming the holder. The lock goes with the process, however it ends.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from dermaseg.core.errors import DermasegError

if TYPE_CHECKING:
    from dermaseg.core.annotation.project import Project
    from dermaseg.webui.page.server import Auth

LOOPBACK_NAMES = {"localhost"}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from dermaseg.webui.cli.project import db_option

    p = subparsers.add_parser("serve", help="open the annotation page (Gradio, offline)", parents=[common, db_option()])
    p.add_argument("--project", type=Path, help="project folder (created if needed; default: a scratch project)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        help="require this login, for a project without users (a project with users requires a login as one of "
        "them); a login is needed to listen beyond loopback",
    )
    p.set_defaults(run=run)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """USER:PASS -> (user, password)."""
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or len(password) < 8:
        raise DermasegError("--auth must be USER:PASS with a password of at least 8 characters")
    return user, password


def login_for(auth: tuple[str, str] | None, host: str, project: Project) -> Auth | None:
    """The page's login: the project's users when it has any (even on loopback), else --auth, which is
    required (and never defaulted) when `host` is not loopback."""
    from dermaseg.webui.login import project_login

    if project.has_users():
        if auth is not None:
            raise DermasegError(
                "this project has users, who log in with their own names and passwords "
                "(`dermaseg project user list`); --auth is for a project without users"
            )
        return project_login(project)
    if auth is None and not is_loopback(host):
        raise DermasegError(
            f"listening on {host} exposes patient images to the network: give --auth USER:PASS "
            "(choose your own password), add the project's users (`dermaseg project user add`), "
            "or keep the default --host 127.0.0.1"
        )
    return auth


def startup_notice(host: str, auth: Auth | None) -> str:
    """What `serve` says about who can reach the page, printed before it starts."""
    if callable(auth):
        who = "every visitor must log in as one of the project's users (`dermaseg project user list`)"
    elif auth is not None:
        who = f"every visitor must log in as {auth[0]!r} with the password given in --auth"
    else:
        who = ""
    if is_loopback(host):
        where = f"listening on {host} only: the page is reachable from this computer, not from the network"
    else:
        where = f"listening on {host}: the page is reachable from the network"
    return f"{where}; {who}" if who else where


def threads_line(pools: dict[str, int]) -> str:
    """ "libscipy_openblas64_.so 1, ..." from `core.threads.numeric_threads()` (read from the libraries)."""
    return ", ".join(f"{name} {n}" for name, n in sorted(pools.items())) or "none loaded"


def run(args: argparse.Namespace) -> int:
    from dermaseg.core.annotation.project import FolderLock, Project
    from dermaseg.core.errors import ModelArtifactError
    from dermaseg.core.segment.artifacts import read_manifest
    from dermaseg.core.segment.segmenter import Engine
    from dermaseg.core.threads import numeric_threads
    from dermaseg.webui.cli.main import settings_from
    from dermaseg.webui.cli.project import db_url
    from dermaseg.webui.page.server import scratch_folder

    auth = parse_auth(args.auth)
    db = db_url(args)
    if db is not None and args.project is None:
        raise DermasegError("--db needs --project FOLDER: the folder for this computer's copies of the images")
    settings = settings_from(args)
    try:
        read_manifest(settings.models_dir)
    except ModelArtifactError as e:
        raise DermasegError(f"the model is not built yet ({e}); run `dermaseg models build` first") from None
    folder = args.project if args.project is not None else scratch_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder, "dermaseg serve"):  # held until serving ends, or this process does
        project = Project.init(folder, db=db, max_pixels=settings.max_pixels)  # the scratch one without --project
        if args.project is not None:
            where = f" on {project.where}" if project.shared else ""
            print(f"project {project.root}{where}: {project.scan_report.summary()}")
        login = login_for(auth, args.host, project)  # refused before the model loads
        engine = Engine.open(settings)
        print(f"threads: ONNX Runtime {settings.threads} intra-op; BLAS {threads_line(numeric_threads())}", flush=True)

        from dermaseg.webui.page.app import build_app, launch

        app = build_app(engine, project, settings)
        print(startup_notice(args.host, login), flush=True)
        print("dermaseg is starting; open the URL below in your browser (Ctrl+C to stop)", flush=True)
        launch(app, host=args.host, port=args.port, auth=login, block=True)
    return 0
