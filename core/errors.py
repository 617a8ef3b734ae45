"""Errors a user can cause. Each carries a message a person can act on; the UI shows it and keeps running."""

from __future__ import annotations

from pathlib import Path


class DermasegError(Exception):
    """Base class of every error dermaseg reports to a user."""


class ImageLoadError(DermasegError):
    """A file that cannot be read as an image, or one outside the supported limits."""


class PromptError(DermasegError):
    """A box or point that cannot be used (outside the image, NaN, zero area, too many points)."""


class GeometryError(DermasegError):
    """A polygon edit that cannot be repaired (too few vertices, outside the image, empty)."""


class CalibrationError(DermasegError):
    """A calibration that makes no sense (non-positive mm per pixel, ruler points that coincide)."""


class CocoError(DermasegError):
    """A COCO file that cannot be imported; the message names the offending entry."""


class StoreError(DermasegError):
    """A project folder or database that cannot be used (read-only, corrupt, not a project)."""


class ConflictError(StoreError):
    """A save against an annotation that changed (or was deleted) since it was loaded.

    annotation_id: the annotation; expected_version: the version the caller loaded; current_version:
    the stored one (None when deleted); changed_by / changed_utc: who and when, when known.
    """

    def __init__(
        self,
        annotation_id: int,
        expected_version: int | None,
        current_version: int | None,
        changed_by: str | None = None,
        changed_utc: str | None = None,
    ) -> None:
        self.annotation_id = annotation_id
        self.expected_version = expected_version
        self.current_version = current_version
        self.changed_by = changed_by
        self.changed_utc = changed_utc
        who = " ".join(w for w in (changed_by and f"by {changed_by}", changed_utc and f"at {changed_utc}") if w)
        if current_version is None:
            what = f"annotation {annotation_id} was deleted since you opened it" + (f" ({who})" if who else "")
        else:
            what = (
                f"annotation {annotation_id} was changed since you opened it ({who + '; ' if who else ''}"
                f"it is now version {current_version}, you edited version {expected_version})"
            )
        super().__init__(
            f"{what}. Nothing was saved. Choose: Reload (show the saved version, dropping your edit) "
            "or Keep both (save yours as a new annotation beside it)"
        )


class ModelArtifactError(DermasegError):
    """A model artifact that is missing or fails its checksum; the message says how to rebuild it."""


def read_user_file(
    path: Path, label: str, kind: str, error: type[DermasegError], max_bytes: int | None = None
) -> bytes:
    """The bytes of a file the user named, or `error` saying why not (missing, a folder, unreadable,
    larger than `max_bytes`). label: how messages name the file; kind: what it should be ("an image file")."""
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise error(f"{label}: larger than {max_bytes >> 20} MiB; refusing to read it")
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{label}: file not found" + (f" ({path})" if label != str(path) else "")) from None
    except IsADirectoryError:
        raise error(f"{label}: is a folder, not {kind}") from None
    except OSError as e:
        raise error(f"{label}: cannot read the file ({e.strerror or e})") from None
