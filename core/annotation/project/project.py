"""`Project`: the one object the page and the command line use, a facade over the project's modules.

An annotation project is a folder of images and one SQLite database of their annotations
(`database`). `Project.open` / `Project.init` scan the folder (`scanning`); annotations are saved as
undoable steps (`annotations`, `history`), work in progress as drafts (`drafts`); `check` finds and
mends damaged rows; `export_coco` / `import_coco` move the project in and out as COCO (`coco_io`).
Every accepted change is one transaction, committed at once (autosave). Thread safe: see `database`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.annotation.project import (
    annotation_rows,
    annotations,
    assignments,
    check,
    coco_io,
    drafts,
    history,
    images,
    paths,
    users,
)
from dermaseg.core.annotation.project import labels as label_list
from dermaseg.core.annotation.project import summary as counts
from dermaseg.core.annotation.project.annotations import UNSET
from dermaseg.core.annotation.project.database import (
    Database,
    check_folder,
    existing_database,
    make_database_folder,
)
from dermaseg.core.annotation.project.image_files import files_of
from dermaseg.core.annotation.project.records import (
    Annotation,
    CheckReport,
    DamagedAnnotation,
    Draft,
    ExportReport,
    ImageRecord,
    ImportReport,
    Json,
    Progress,
    Provenance,
    ScanReport,
    User,
)
from dermaseg.core.calibration import Calibration
from dermaseg.core.image import DEFAULT_MAX_PIXELS, LesionImage


class Project:
    """An annotation project: use `Project.init(folder)` or `Project.open(folder)`, then `close()`.

    Each method is the function of the same name in the module named in brackets; read there for details.
    """

    def __init__(
        self, root: Path, db: Database, *, max_pixels: int = DEFAULT_MAX_PIXELS, image_cache: Path | None = None
    ) -> None:
        self.root = root
        self.db_path = db.path  # the SQLite file; None for a project on a server
        self.where = db.where  # the database, as messages name it (a URL without its password)
        self.shared = db.path is None  # on a server, for several people
        self.max_pixels = max_pixels  # the largest image `load_image` decodes, width x height (Settings)
        self.scan_report = ScanReport()
        self._db = db
        self.team = assignments.Team(db)  # who works on which image: claim_next, submit, review... (assignments)
        self._files = files_of(db, root, image_cache)

    # ---- opening and closing (database)

    @classmethod
    def init(
        cls,
        folder: str | Path,
        labels: Sequence[str] | None = None,
        *,
        db: str | None = None,
        scan: bool = True,
        progress: Progress | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        image_cache: Path | None = None,
    ) -> Project:
        """Create the project (or open an existing one) and scan the folder.

        folder: the images. db: a PostgreSQL URL to share the project's records on that server (the
        database must exist and be empty or a dermaseg project); default, SQLite in `<folder>/.dermaseg/`.
        labels: the label list for a new project (default ("lesion",)); ignored for an existing one.
        """
        root = check_folder(folder)
        names = label_list.check_labels(labels if labels is not None else label_list.DEFAULT_LABELS)
        with closing(Database.server(db) if db is not None else Database.sqlite(make_database_folder(root))) as d:
            d.create_schema(names)
        return cls.open(root, db=db, scan=scan, progress=progress, max_pixels=max_pixels, image_cache=image_cache)

    @classmethod
    def open(
        cls,
        folder: str | Path,
        *,
        db: str | None = None,
        scan: bool = True,
        progress: Progress | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        image_cache: Path | None = None,
    ) -> Project:
        """Open the project of `folder` (its SQLite database, or the one at the PostgreSQL URL `db`), check
        its database (upgrading an older one after a backup), and scan the folder.

        image_cache: where a shared project keeps images it has no local copy of (`Settings.images_dir`).
        """
        root = check_folder(folder)
        database = Database.server(db) if db is not None else Database.sqlite(existing_database(root))
        database.open_checked()
        project = cls(root, database, max_pixels=max_pixels, image_cache=image_cache)
        if scan:
            project.scan(progress)
        return project

    def close(self) -> None:
        """Close every connection this project opened (in any thread)."""
        self._db.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """ "ok" when the database is sound (SQLite checks its file; a server checks itself)."""
        return self._db.integrity_check()

    # ---- the folder (paths, scanning)

    def safe_path(self, rel: str) -> Path:
        """Absolute path of a project-relative path; StoreError unless it stays inside the folder."""
        return paths.safe_path(self.root, rel)

    def scan(self, progress: Progress | None = None) -> ScanReport:
        """Add new images, follow moved ones, update changed ones (a shared project: add new images, share
        their bytes; see `image_files`); also kept as `scan_report`."""
        self.scan_report = self._files.scan(progress)
        return self.scan_report

    # ---- labels (labels)

    def labels(self) -> tuple[str, ...]:
        """The label list, in display order."""
        return label_list.labels(self._db)

    def set_labels(self, names: Sequence[str]) -> None:
        """Replace the label list; a label still used by an annotation cannot be removed."""
        label_list.set_labels(self._db, names)

    # ---- images (images)

    def images(self, statuses: Collection[str] | None = None) -> list[ImageRecord]:
        """All images (or those with one of `statuses`), ordered by path."""
        return images.images(self._db, statuses)

    def image(self, image_id: int) -> ImageRecord:
        return images.image(self._db, image_id)

    def image_by_path(self, rel: str) -> ImageRecord | None:
        return images.image_by_path(self._db, rel)

    def load_image(self, image_id: int) -> LesionImage:
        """Decode an image with its stored (or the project's) calibration; records the pixel hash."""
        return images.load_project_image(self._db, self._files.path, image_id, self.max_pixels)

    def project_calibration(self) -> Calibration | None:
        """The project's scale (one device at contact), used by every image without one of its own."""
        return images.project_calibration(self._db)

    def set_project_calibration(self, calibration: Calibration | None) -> None:
        """Set (or, with None, remove) the project's scale."""
        images.set_project_calibration(self._db, calibration)

    def set_status(self, image_id: int, status: str) -> None:
        images.set_status(self._db, image_id, status)

    def set_calibration(self, image_id: int, calibration: Calibration | None) -> None:
        images.set_calibration(self._db, image_id, calibration)

    # ---- annotations (annotation_rows, annotations)

    def annotations(self, image_id: int | None = None) -> list[Annotation]:
        """Annotations of one image (or all), oldest first; damaged ones left out."""
        return annotation_rows.annotations(self._db, image_id)

    def annotation(self, ann_id: int) -> Annotation:
        return annotation_rows.annotation(self._db, ann_id)

    def damaged_annotations(self, image_id: int | None = None) -> list[DamagedAnnotation]:
        """Stored annotations that cannot be decoded, oldest first."""
        return annotation_rows.damaged_annotations(self._db, image_id)

    def add_annotation(
        self,
        image_id: int,
        mask: np.ndarray,
        label: str | None = None,
        *,
        polygons: Polygons | Mapping[str, Json] | None = None,
        metrics: Any = None,
        tolerance_px: float | None = None,
        provenance: Provenance | None = None,
    ) -> Annotation:
        """Save a new annotation (committed on return) and make it undoable."""
        return annotations.add_annotation(
            self._db, image_id, mask, label,
            polygons=polygons, metrics=metrics, tolerance_px=tolerance_px, provenance=provenance,
        )  # fmt: skip

    def update_annotation(
        self,
        ann_id: int,
        *,
        mask: np.ndarray | None = None,
        polygons: Polygons | Mapping[str, Json] | None = None,
        label: str | None = None,
        metrics: Any = UNSET,
        tolerance_px: float | None = UNSET,
        provenance: Provenance | None = None,
        expected_version: int | None = None,
    ) -> Annotation:
        """Change an annotation (committed on return, undoable); ConflictError when `expected_version`
        is given and the stored one differs."""
        return annotations.update_annotation(
            self._db, ann_id, mask=mask, polygons=polygons, label=label, metrics=metrics,
            tolerance_px=tolerance_px, provenance=provenance, expected_version=expected_version,
        )  # fmt: skip

    def delete_annotation(self, ann_id: int, *, expected_version: int | None = None) -> None:
        """Delete an annotation (committed on return, undoable)."""
        annotations.delete_annotation(self._db, ann_id, expected_version=expected_version)

    # ---- undo / redo (history)

    def last_action(self, image_id: int, *, undone: bool = False) -> int | None:
        """Id of the step `undo(image_id)` would undo (undone=True: the one `redo` would redo), or None."""
        return history.last_action(self._db, image_id, undone=undone)

    def undo(self, image_id: int, action_id: int | None = None) -> bool:
        """Undo the latest annotation edit on the image; False when there is nothing to undo.

        action_id: undo only if that step (`last_action`) is still the latest, else StoreError.
        """
        return history.step(self._db, image_id, action_id, undo=True)

    def redo(self, image_id: int, action_id: int | None = None) -> bool:
        """Redo the earliest undone edit on the image; False when there is nothing to redo.

        action_id: redo only if that step (`last_action(undone=True)`) is still the next, else StoreError.
        """
        return history.step(self._db, image_id, action_id, undo=False)

    def history_depth(self, image_id: int) -> tuple[int, int]:
        """(steps that can be undone, steps that can be redone) for the image."""
        return history.history_depth(self._db, image_id)

    # ---- work in progress (drafts)

    def save_draft(
        self, image_id: int, prompts: Json, polygons: Json = None, tolerance_px: float | None = None, user: str = ""
    ) -> None:
        """Keep `user`'s work in progress on an image ("": a one-person project; one UPSERT): see `Draft`."""
        drafts.save_draft(self._db, image_id, prompts, polygons, tolerance_px, user)

    def draft(self, image_id: int, user: str = "") -> Draft | None:
        """`user`'s draft on the image, or None (also when it is damaged)."""
        return drafts.draft(self._db, image_id, user)

    def discard_draft(self, image_id: int, user: str = "") -> None:
        drafts.discard_draft(self._db, image_id, user)

    def ui_state(self, key: str) -> str | None:
        """A value the page keeps between visits (last image, annotator name), or None."""
        return drafts.ui_state(self._db, key)

    def set_ui_state(self, key: str, value: str) -> None:
        drafts.set_ui_state(self._db, key, value)

    # ---- people (users)

    def users(self) -> list[User]:
        """Every user of the project, by name (none: a one-person project, no login)."""
        return users.users(self._db)

    def user(self, name: str) -> User:
        return users.user(self._db, name)

    def has_users(self) -> bool:
        return users.has_users(self._db)

    def add_user(self, name: str, password: str, role: str = "annotator") -> User:
        """Add a person with a role (annotator or reviewer); the password is stored hashed (scrypt)."""
        return users.add_user(self._db, name, password, role)

    def authenticate(self, name: str, password: str) -> User | None:
        """The enabled user with this name and password, else None."""
        return users.authenticate(self._db, name, password)

    def set_password(self, name: str, password: str) -> None:
        users.set_password(self._db, name, password)

    def set_role(self, name: str, role: str) -> None:
        users.set_role(self._db, name, role)

    def set_disabled(self, name: str, disabled: bool) -> None:
        users.set_disabled(self._db, name, disabled)

    # ---- check, summary, COCO (check, summary, coco_io)

    def check(self, repair: bool = False) -> CheckReport:
        """Check the database (integrity, damaged annotations, missing image files); repair=True mends them."""
        return check.check(self._db, self._files.missing, repair)

    def summary(self) -> dict[str, Any]:
        """Counts for `dermaseg project status`: images by status, annotations by label, labels."""
        return counts.summary(self._db, self.root)

    def export_coco(
        self,
        coco_path: str | Path,
        *,
        masks_dir: str | Path | None = None,
        force_rle: bool = False,
        statuses: Collection[str] | None = None,
        image_ids: Collection[int] | None = None,
        progress: Progress | None = None,
    ) -> ExportReport:
        """Write the project (or the images with one of `statuses`, or those of `image_ids`) as COCO JSON,
        plus PNG masks in `masks_dir` (outside the project folder)."""
        return coco_io.export_coco(
            self._db, self.root, coco_path, masks_dir=masks_dir, force_rle=force_rle, statuses=statuses,
            image_ids=image_ids, progress=progress,
        )  # fmt: skip

    def import_coco(
        self,
        source: str | Path | bytes,
        *,
        replace: bool = False,
        annotator: str | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import a COCO file's annotations, all or nothing (CocoError naming the entry)."""
        return coco_io.import_coco(self._db, self.root, source, replace=replace, annotator=annotator, progress=progress)
