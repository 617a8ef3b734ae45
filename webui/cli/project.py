"""`dermaseg project ...`: create, inspect, export and import annotation projects from the shell.

    dermaseg project init FOLDER [--label NAME ...]
    dermaseg project status FOLDER [--json]
    dermaseg project export-coco FOLDER --out FILE.json [--masks DIR] [--rle] [--status STATUS ...]
    dermaseg project import-coco FOLDER FILE.json [--replace] [--annotator NAME]
    dermaseg project agreement FOLDER [--json OUT.json] [--consensus staple|majority --coco OUT.json]
    dermaseg project check FOLDER [--repair]
    dermaseg project migrate FOLDER --to URL | --from URL
    dermaseg project user add|list|passwd|role|disable|enable FOLDER [NAME]   (see `users`)
    dermaseg project raters|next|submit|review ...    (a team's work: `team`)

Every command takes `--db URL` (or the `DERMASEG_DB` environment variable): the project's records are then
on that PostgreSQL server, shared by a team, and FOLDER holds this computer's copies of the images (any,
or none: images are known by content). Without it, the project is the SQLite database in FOLDER/.dermaseg.

Thin: each command is one `dermaseg.core.annotation.project.Project` call; errors are `DermasegError`s that the
main CLI prints. Progress bars (tqdm, on stderr) appear only on a terminal.

Exit codes: 0 done; 2 refused (an error message says why); EXIT_DAMAGED (3) when `export-coco` wrote
every healthy annotation but left damaged ones out (named on stderr), or `check` found problems that
remain (without --repair, or that a repair could not mend). Writers (`import-coco`, `check --repair`)
take the folder's lock: they are refused while `dermaseg serve` has the project open; `agreement` only
reads (its consensus COCO is written beside the project, never into it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.project import (
    STATUSES,
    CheckReport,
    DamagedAnnotation,
    FolderLock,
    Project,
    ScanReport,
)
from dermaseg.core.annotation.project.database import DB_ENV
from dermaseg.core.annotation.project.raters import (
    CONSENSUS_METHODS,
    ConsensusCoco,
    measure_raters,
    rater_masks,
)
from dermaseg.core.annotation.project.transfer import TransferReport, migrate_to_folder, migrate_to_server
from dermaseg.core.errors import DermasegError
from dermaseg.webui.cli import team, users

T = TypeVar("T")
EXIT_DAMAGED = 3


DB_HELP = (
    f"the PostgreSQL database holding the project, shared by a team: postgresql://USER@HOST:PORT/DATABASE "
    f"(default: ${DB_ENV}; without either, the SQLite database in FOLDER/.dermaseg). Keep the password out of "
    "the command line: in ~/.pgpass or PGPASSWORD"
)


def db_option() -> argparse.ArgumentParser:
    """The `--db URL` option, for `project` commands and `serve`."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="URL", help=DB_HELP)
    return parent


def db_url(args: argparse.Namespace) -> str | None:
    """The project's database URL: `--db`, else $DERMASEG_DB, else None (SQLite in the folder)."""
    return getattr(args, "db", None) or os.environ.get(DB_ENV) or None


def open_project(args: argparse.Namespace, **kwargs: Any) -> Project:
    """`Project.open(args.folder)` on the database `--db` names (see `db_url`)."""
    return Project.open(args.folder, db=db_url(args), **kwargs)


def register(subparsers: Any, common: Any) -> None:  # noqa: ARG001 - projects need no model options
    """Add the `project` command and its actions to the main CLI's subparsers."""
    project = subparsers.add_parser("project", help="annotation projects: init, status, COCO export/import")
    psub = project.add_subparsers(metavar="ACTION")
    db = db_option()  # every action takes --db

    p = psub.add_parser("init", parents=[db], help="make FOLDER a project (or rescan one) and list what was found")
    p.add_argument("folder", type=Path)
    p.add_argument(
        "--label", action="append", dest="labels", metavar="NAME", help="a label of a new project (repeatable)"
    )
    p.set_defaults(run=_init)

    p = psub.add_parser("status", parents=[db], help="images by status, annotations by label, changes in the folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=_status)

    p = psub.add_parser("export-coco", parents=[db], help="write COCO JSON (and PNG masks) of the project")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the COCO JSON file to write")
    p.add_argument("--masks", type=Path, help="also write one 0/255 PNG mask per image into this folder")
    p.add_argument("--rle", action="store_true", help="write every mask as RLE (default: polygons unless holes)")
    p.add_argument("--status", action="append", choices=STATUSES, dest="statuses", help="only images with this status")
    p.set_defaults(run=_export)

    p = psub.add_parser("import-coco", parents=[db], help="add the annotations of a COCO JSON file to the project")
    p.add_argument("folder", type=Path)
    p.add_argument("file", type=Path)
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace, on the images in the file, the annotations of the raters the file brings (others stay)",
    )
    p.add_argument(
        "--annotator",
        metavar="NAME",
        help="file the annotations under this rater, beside other raters' (a name the file's own provenance "
        "gives is kept)",
    )
    p.set_defaults(run=_import)

    p = psub.add_parser(
        "agreement",
        parents=[db],
        help="agreement between raters (Dice, IoU, HD95) on images with 2+ raters; consensus as COCO",
    )
    p.add_argument("folder", type=Path)
    p.add_argument("--json", type=Path, metavar="OUT", help="write every figure as JSON to this file")
    p.add_argument("--consensus", choices=CONSENSUS_METHODS, help="consensus mask per image (with --coco)")
    p.add_argument("--coco", type=Path, metavar="OUT", help="write the consensus masks as COCO to this file")
    p.set_defaults(run=_agreement)

    p = psub.add_parser(
        "check",
        parents=[db],
        help="check the database: integrity, damaged annotations, missing image files (and repair)",
    )
    p.add_argument("folder", type=Path)
    p.add_argument(
        "--repair",
        action="store_true",
        help="repair damaged annotations (from the edit history, or from their outline or mask); "
        "move what cannot be repaired to the quarantine table",
    )
    p.set_defaults(run=_check)

    p = psub.add_parser(
        "migrate",
        help="copy the folder's project to a PostgreSQL server (--to), or a server's into the folder (--from)",
    )
    p.add_argument("folder", type=Path)
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--to", metavar="URL", help="an empty PostgreSQL database to copy the folder's project to")
    way.add_argument("--from", dest="source", metavar="URL", help="the PostgreSQL database to copy into the folder")
    p.set_defaults(run=_migrate)

    users.register(psub, db)
    team.register(psub, [db], lambda args: open_project(args, scan=False))
    project.set_defaults(run=lambda args: _help(project))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _bar(it: Iterable[T], total: int, desc: str) -> Iterable[T]:
    # disable=None: bars only on a terminal, so logs and tests stay clean
    return tqdm(it, total=total, desc=desc, unit="item", disable=None, leave=False, file=sys.stderr)


def _print_scan(report: ScanReport) -> None:
    print(f"scan: {report.summary()}")
    for title, items in (
        ("moved", [f"{a} -> {b}" for a, b in report.moved]),
        ("changed (same path, new content)", report.changed),
        ("missing", report.missing),
        ("unreadable", report.unreadable),
        ("refused (link outside the folder)", report.refused),
        ("only on the server (read from there when opened)", report.remote[:10]),
    ):
        if items:
            print(f"  {title}:")
            for item in items:
                print(f"    {item}")


def _init(args: argparse.Namespace) -> int:
    with Project.init(args.folder, labels=args.labels, db=db_url(args), progress=_bar) as p:
        s = p.summary()
        print(f"project {p.root}: {s['images']} images, labels: {', '.join(s['labels'])}")
        _print_scan(p.scan_report)
    return 0


def _status(args: argparse.Namespace) -> int:
    with open_project(args, progress=_bar) as p:
        s = p.summary()
        r = p.scan_report
        if args.json:
            s["scan"] = {
                "added": list(r.added),
                "moved": [list(m) for m in r.moved],
                "changed": list(r.changed),
                "missing": list(r.missing),
                "unreadable": list(r.unreadable),
                "refused": list(r.refused),
                "remote": list(r.remote),
            }
            if p.has_users():
                s["team"] = team.status_json(p)
            print(json.dumps(s, indent=2))
            return 0
        print(f"project {p.root}" + (f" on {p.where}" if p.shared else ""))
        print(f"images: {s['images']} (" + ", ".join(f"{k} {v}" for k, v in s["by_status"].items()) + ")")
        by_label = ", ".join(f"{k} {v}" for k, v in sorted(s["by_label"].items())) or "none"
        print(f"annotations: {s['annotations']} ({by_label})")
        print(f"labels: {', '.join(s['labels'])}")
        if p.has_users():
            team.print_status(p)
        _print_scan(r)
    return 0


def _export(args: argparse.Namespace) -> int:
    with open_project(args, progress=_bar) as p:
        rep = p.export_coco(args.out, masks_dir=args.masks, force_rle=args.rle, statuses=args.statuses, progress=_bar)
    print(
        f"wrote {rep.coco_path}: {rep.images} images, {rep.annotations} annotations "
        f"({rep.polygon_annotations} polygons, {rep.rle_annotations} RLE)"
    )
    if rep.masks_dir is not None:
        print(f"masks in {rep.masks_dir}")
    if rep.damaged:
        _warn_damaged(rep.damaged, args.folder)
        return EXIT_DAMAGED
    return 0


def _warn_damaged(damaged: Iterable[DamagedAnnotation], folder: Path) -> None:
    damaged = list(damaged)
    print(f"warning: {len(damaged)} damaged annotation(s) left out:", file=sys.stderr)
    for d in damaged:
        print(f"  {d.describe()}", file=sys.stderr)
    print(f"run `dermaseg project check {folder} --repair` to repair or quarantine them", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    with open_project(args, scan=False) as p:
        lock = FolderLock(p.root, "dermaseg project check --repair") if args.repair else contextlib.nullcontext()
        with lock:
            rep = p.check(repair=args.repair)
        after = p.check() if args.repair and rep.damaged else rep
    _print_check(rep)
    return 0 if after.healthy else EXIT_DAMAGED


def _print_check(rep: CheckReport) -> None:
    print(f"database integrity: {rep.integrity}")
    print(f"damaged annotations: {len(rep.damaged)}")
    for d in rep.damaged:
        print(f"  {d.describe()}")
    print(f"missing image files: {len(rep.missing_files)}")
    for path in rep.missing_files:
        print(f"  {path}")
    for ann_id, how in rep.repaired:
        print(f"repaired annotation {ann_id}: {how}")
    for ann_id in rep.quarantined:
        print(f"quarantined annotation {ann_id}: moved to the quarantine table (kept, not deleted)")
    if rep.damaged and not (rep.repaired or rep.quarantined):
        print("run again with --repair to repair what can be repaired and quarantine the rest")


def _import(args: argparse.Namespace) -> int:
    with open_project(args, progress=_bar) as p, FolderLock(p.root, "dermaseg project import-coco"):
        rep = p.import_coco(args.file, replace=args.replace, annotator=args.annotator, progress=_bar)
    print(
        f"imported {rep.added} annotations on {rep.images} images"
        + (f", replaced {rep.replaced}" if rep.replaced else "")
        + (f", skipped {rep.skipped_duplicates} already present" if rep.skipped_duplicates else "")
    )
    if rep.new_labels:
        print(f"new labels: {', '.join(rep.new_labels)}")
    return 0


def _agreement(args: argparse.Namespace) -> int:
    if (args.consensus is None) != (args.coco is None):
        raise DermasegError("--consensus and --coco go together: --consensus staple|majority --coco OUT.json")
    with open_project(args, scan=False) as p:
        gathered = rater_masks(p)
        if not gathered.images:
            raise DermasegError(
                f"{p.root}: no image has annotations by two or more raters "
                f"({len(gathered.single_rater)} annotated by one rater); add another rater's with "
                "`dermaseg project import-coco FOLDER FILE --annotator NAME`"
            )
        consensus = ConsensusCoco(args.consensus, p.labels()) if args.consensus is not None else None
        result = measure_raters(gathered, consensus)  # one image at a time
    data = {**result.to_json(), "raters": list(gathered.raters), "skipped_single_rater": list(gathered.single_rater)}
    hd95 = result.hd95_px.mean if result.hd95_px is not None else None
    print(f"images: {len(result.images)} with 2+ raters ({data['n_pairs']} pairs)")
    print(f"raters: {', '.join(gathered.raters)}")
    print(f"mean Dice: {result.mean_dice:.3f}   mean HD95: " + (f"{hd95:.1f} px" if hd95 is not None else "n/a"))
    if gathered.single_rater:
        print(f"skipped: {len(gathered.single_rater)} image(s) with one rater only")
    print("most disagreement (1 - mean Dice):")
    print(f"  {'image':<32} {'raters':>6} {'Dice':>6} {'HD95 px':>8}")
    for im in result.ranked[:5]:
        h = f"{im.mean_hd95_px:.1f}" if im.mean_hd95_px is not None else "n/a"
        print(f"  {im.file_name:<32} {len(im.raters):>6} {im.mean_dice:>6.3f} {h:>8}")
    print(data["notice"])
    if args.json is not None:
        coco.write_json_atomic(data, args.json)
        print(f"wrote {args.json}")
    if consensus is not None:
        rep = consensus.write(args.coco, gathered.raters)
        print(f"wrote {rep.coco_path}: {rep.annotations} consensus annotations ({args.consensus})")
        if rep.empty:
            print(f"  no consensus pixel (no annotation written) on: {', '.join(rep.empty)}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    with FolderLock(args.folder, "dermaseg project migrate"):
        if args.to is not None:
            rep = migrate_to_server(args.folder, args.to, progress=_bar)
        else:
            rep = migrate_to_folder(args.source, args.folder, progress=_bar)
    _print_transfer(rep)
    return 0


def _print_transfer(rep: TransferReport) -> None:
    print(f"copied {rep.source} -> {rep.target}")
    print("  " + ", ".join(f"{table} {n}" for table, n in rep.rows.items() if n))
    if rep.files_shared:
        print(f"  {rep.files_shared} image files on the server, for people without a copy of the folder")
    if rep.files_written:
        print(f"  {len(rep.files_written)} image files written into the folder from the server")
    if rep.scan is not None and rep.scan.unreadable:
        print(f"  unreadable, not shared: {', '.join(rep.scan.unreadable)}")
