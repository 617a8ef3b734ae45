"""Errors a user can cause. Each carries a message a person can act on; the UI shows it and keeps running."""


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


class ModelArtifactError(DermasegError):
    """A model artifact that is missing or fails its checksum; the message says how to rebuild it."""
