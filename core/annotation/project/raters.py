"""Raters of a project's images: each rater's mask per image (for `core.annotation.agreement`) and a
consensus of them written as COCO beside the project, one image at a time (memory holds one image's
masks, however many images the project has).

A rater is the annotator named in an annotation's provenance (`UNNAMED_RATER` when none is); a rater's
mask on an image is the union of their annotations of any label there, bool (H, W) at the image's full
resolution. Uses only the `Project` facade (no SQL here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.agreement import (
    CONSENSUS_METHODS,
    Consensus,
    ImageAgreement,
    ProjectAgreement,
    image_agreement_and_consensus,
    project_agreement,
)
from dermaseg.core.annotation.project.coco_io import write_coco_file
from dermaseg.core.annotation.project.records import (
    Annotation,
    ImageRecord,
    Progress,
    Provenance,
    no_progress,
    tool_version,
    utc_now,
)
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import StoreError

if TYPE_CHECKING:
    from dermaseg.core.annotation.project.project import Project

UNNAMED_RATER = "(no name)"  # the rater of annotations whose provenance names nobody
CONSENSUS_NAMES = {"staple": "consensus (STAPLE)", "majority": "consensus (majority vote)"}


def rater_of(a: Annotation) -> str:
    """The rater an annotation is filed under: its provenance's annotator, else `UNNAMED_RATER`."""
    return (a.provenance.annotator or "").strip() or UNNAMED_RATER


@dataclass(frozen=True)
class ImageRaters:
    """One image's raters' masks. masks: {rater: bool (H, W) mask at the image's full resolution}, raters
    in the order they first annotated the image; calibration: the image's own scale, else the project's,
    else None; label: the label most used on the image (for a consensus annotation)."""

    record: ImageRecord
    masks: dict[str, np.ndarray] = field(repr=False, compare=False)
    calibration: Calibration | None
    label: str

    @property
    def file_name(self) -> str:
        return self.record.path


@dataclass(frozen=True)
class RaterMasks:
    """A project's images with two or more raters, read one image at a time.

    images: records of the images with two or more raters, in the project's order; raters: every rater
    of those images, sorted by name; single_rater: paths of annotated images with only one rater (left
    out). Iterating decodes one image's masks at a time
    (`ImageRaters`, read from the project when it is reached), so memory holds one image's masks however
    many images there are; iterate while the project is open. An image that no longer has two raters when
    it is reached (the project is read without a lock) is passed over.
    """

    project: Project = field(repr=False, compare=False)
    images: tuple[ImageRecord, ...]
    raters: tuple[str, ...]
    single_rater: tuple[str, ...]

    def __iter__(self) -> Iterator[ImageRaters]:
        default_cal = self.project.project_calibration()
        # No local holds an image once it is handed out (a generator's locals live until its next step),
        # so the previous image's masks can be freed before the next image's are read.
        return filter(None, (self._read(rec, default_cal) for rec in self.images))

    def _read(self, rec: ImageRecord, default_cal: Calibration | None) -> ImageRaters | None:
        """One image's raters' masks, read from the project now; None if it has fewer than 2 raters now."""
        anns = self.project.annotations(rec.id)
        if len({rater_of(a) for a in anns}) < 2:
            return None
        by_rater: dict[str, np.ndarray] = {}
        for a in anns:
            if (a.rle.height, a.rle.width) != (rec.height, rec.width):
                raise StoreError(
                    f"{rec.path}: annotation id {a.id} is {a.rle.width}x{a.rle.height} but the image is "
                    f"now {rec.width}x{rec.height} (the file changed); fix or delete the annotation"
                )
            m = by_rater.setdefault(rater_of(a), np.zeros((rec.height, rec.width), dtype=bool))
            m |= a.mask()
        label = Counter(a.label for a in anns).most_common(1)[0][0]
        return ImageRaters(rec, by_rater, rec.calibration or default_cal, label)


def rater_masks(project: Project) -> RaterMasks:
    """The images of `project` with two or more raters, their masks to be read one image at a time (see
    `RaterMasks`). Reads each image's annotations (not their masks) once to sort the images.

    Iterating raises StoreError when an annotation's size is not its image's (the file changed since).
    """
    images: list[ImageRecord] = []
    raters: set[str] = set()
    single: list[str] = []
    for rec in project.images():
        names = {rater_of(a) for a in project.annotations(rec.id)}
        if len(names) >= 2:
            images.append(rec)
            raters |= names
        elif names:
            single.append(rec.path)
    return RaterMasks(project, tuple(images), tuple(sorted(raters)), tuple(single))


@dataclass(frozen=True)
class ConsensusReport:
    """What `ConsensusCoco.write` wrote: the file, how many images got a consensus annotation, and the
    paths of images whose consensus is empty (no pixel reaches it; no annotation written for them)."""

    coco_path: Path
    annotations: int
    empty: tuple[str, ...]


class ConsensusCoco:
    """A COCO file of consensus masks (method "staple" or "majority"), built one image at a time.

    `add` encodes an image's consensus (RLE) as it goes by, so no mask is kept; `write` writes the file.
    One annotation per image, filed under the annotator `CONSENSUS_NAMES[method]` with the image's most
    used label; image entries carry the file hash, so the file imports back into the project (or a copy
    of it) with `import-coco`. Written atomically; the project itself is not changed.
    """

    def __init__(self, method: str, project_labels: Collection[str]) -> None:
        if method not in CONSENSUS_METHODS:
            raise StoreError(f"consensus method {method!r}: use one of {', '.join(CONSENSUS_METHODS)}")
        self.method = method
        self.name = CONSENSUS_NAMES[method]
        self._time = utc_now()
        self._cats = dict(_category_ids(project_labels, ()))  # grows by each new label, as images come
        self._images: list[dict[str, Any]] = []
        self._anns: list[dict[str, Any]] = []
        self._empty: list[str] = []

    def add(self, image: ImageRaters, consensus: Consensus) -> None:
        """Add one image and its consensus annotation (none when the consensus has no pixel)."""
        rec = image.record
        self._images.append(coco.image_dict(rec.id, rec.path, rec.width, rec.height, {"file_sha256": rec.file_sha256}))
        cat = self._cats.setdefault(image.label, len(self._cats) + 1)
        mask = consensus.mask(self.method)
        if not mask.any():
            self._empty.append(rec.path)
            return
        prov = Provenance(source="consensus", annotator=self.name, tool_version=tool_version(), time_utc=self._time)
        extra = {"label": image.label, "raters": list(image.masks), "provenance": prov.to_json()}
        self._anns.append(coco.annotation_dict(len(self._anns) + 1, rec.id, cat, mask, extra=extra))

    def write(self, coco_path: str | Path, raters: Collection[str]) -> ConsensusReport:
        """Write the file (`raters`: every rater, named in its description); atomically."""
        info = {"description": f"dermaseg {self.name} of {', '.join(raters)}", "version": tool_version(),
                "date_created": self._time}  # fmt: skip
        data = coco.dataset_dict(self._images, self._anns, [(i, n) for n, i in self._cats.items()], info)
        return ConsensusReport(write_coco_file(data, coco_path), len(self._anns), tuple(self._empty))


def measure_raters(
    gathered: RaterMasks, consensus: ConsensusCoco | None = None, progress: Progress | None = None
) -> ProjectAgreement:
    """Agreement over the images of `gathered`, one image at a time: each image's masks are read,
    measured, their consensus handed to `consensus` (if any), then dropped; only the figures are kept.
    `progress` sees the images go by (one step an image).

    Raises GeometryError when no image has two raters (left).
    """

    def measure(image: ImageRaters) -> ImageAgreement:
        result, cons = image_agreement_and_consensus(image.file_name, image.masks, image.calibration)
        if consensus is not None:
            consensus.add(image, cons)
        return result

    images = (progress or no_progress)(gathered, len(gathered.images), "agreement")
    return project_agreement(map(measure, images))  # (a generator's locals would keep the last image)


def _category_ids(project_labels: Collection[str], used: Collection[str]) -> Mapping[str, int]:
    """{label: category id}: the project's labels numbered from 1 in order, then any other used label."""
    names = list(dict.fromkeys([*project_labels, *used]))
    return {n: i for i, n in enumerate(names, start=1)}
