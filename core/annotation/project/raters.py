"""Raters of a project's images: each rater's mask per image (for `core.annotation.agreement`) and a
consensus of them written as COCO beside the project.

A rater is the annotator named in an annotation's provenance (`UNNAMED_RATER` when none is); a rater's
mask on an image is the union of their annotations of any label there, bool (H, W) at the image's full
resolution. Uses only the `Project` facade (no SQL here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.agreement import ProjectAgreement
from dermaseg.core.annotation.project.records import (
    Annotation,
    ImageRecord,
    Provenance,
    tool_version,
    utc_now,
)
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import StoreError

if TYPE_CHECKING:
    from dermaseg.core.annotation.project.project import Project

UNNAMED_RATER = "(no name)"  # the rater of annotations whose provenance names nobody
CONSENSUS_METHODS = ("staple", "majority")
CONSENSUS_NAMES = {"staple": "consensus (STAPLE)", "majority": "consensus (majority vote)"}


def rater_of(a: Annotation) -> str:
    """The rater an annotation is filed under: its provenance's annotator, else `UNNAMED_RATER`."""
    return (a.provenance.annotator or "").strip() or UNNAMED_RATER


@dataclass(frozen=True)
class RaterMasks:
    """Each image's raters' masks, ready for `agreement.agreement(masks, calibrations)`.

    masks: {image path: {rater: bool (H, W) mask}}, only images with two or more raters, raters in
    the order they first annotated the image. calibrations: {image path: the image's own scale, else
    the project's} for those images that have one. records: {image path: ImageRecord} of those images.
    labels: {image path: the label most used on it} (for a consensus annotation). single_rater: paths
    of annotated images with only one rater (left out of `masks`).
    """

    masks: dict[str, dict[str, np.ndarray]]
    calibrations: dict[str, Calibration]
    records: dict[str, ImageRecord]
    labels: dict[str, str]
    single_rater: tuple[str, ...]

    @property
    def raters(self) -> tuple[str, ...]:
        """Every rater of the images in `masks`, sorted by name."""
        return tuple(sorted({r for by_rater in self.masks.values() for r in by_rater}))


def rater_masks(project: Project) -> RaterMasks:
    """Gather each rater's mask on every annotated image of `project` (see `RaterMasks`).

    Raises StoreError when an annotation's size is not its image's (the file changed since).
    """
    by_image: dict[int, list[Annotation]] = {}
    for a in project.annotations():
        by_image.setdefault(a.image_id, []).append(a)
    default_cal = project.project_calibration()
    masks: dict[str, dict[str, np.ndarray]] = {}
    calibrations: dict[str, Calibration] = {}
    records: dict[str, ImageRecord] = {}
    labels: dict[str, str] = {}
    single: list[str] = []
    for rec in project.images():
        anns = by_image.get(rec.id)
        if not anns:
            continue
        if len({rater_of(a) for a in anns}) < 2:
            single.append(rec.path)
            continue
        by_rater: dict[str, np.ndarray] = {}
        for a in anns:
            if (a.rle.height, a.rle.width) != (rec.height, rec.width):
                raise StoreError(
                    f"{rec.path}: annotation id {a.id} is {a.rle.width}x{a.rle.height} but the image is "
                    f"now {rec.width}x{rec.height} (the file changed); fix or delete the annotation"
                )
            m = by_rater.setdefault(rater_of(a), np.zeros((rec.height, rec.width), dtype=bool))
            m |= a.mask()
        masks[rec.path] = by_rater
        records[rec.path] = rec
        labels[rec.path] = Counter(a.label for a in anns).most_common(1)[0][0]
        cal = rec.calibration or default_cal
        if cal is not None:
            calibrations[rec.path] = cal
    return RaterMasks(masks, calibrations, records, labels, tuple(single))


@dataclass(frozen=True)
class ConsensusReport:
    """What `write_consensus_coco` wrote: the file, how many images got a consensus annotation, and the
    paths of images whose consensus is empty (no pixel reaches it; no annotation written for them)."""

    coco_path: Path
    annotations: int
    empty: tuple[str, ...]


def write_consensus_coco(
    result: ProjectAgreement,
    gathered: RaterMasks,
    method: str,
    coco_path: str | Path,
    project_labels: Collection[str],
) -> ConsensusReport:
    """Write the consensus masks of `result` (method "staple" or "majority") as a COCO file.

    One annotation per image, filed under the annotator `CONSENSUS_NAMES[method]` with the image's most
    used label; image entries carry the file hash, so the file imports back into the project (or a copy
    of it) with `import-coco`. Written atomically; the project itself is not changed.
    """
    if method not in CONSENSUS_METHODS:
        raise StoreError(f"consensus method {method!r}: use one of {', '.join(CONSENSUS_METHODS)}")
    name = CONSENSUS_NAMES[method]
    cats = _category_ids(project_labels, gathered.labels.values())
    now = utc_now()
    images, anns, empty = [], [], []
    for im in result.images:
        rec = gathered.records[im.file_name]
        images.append(coco.image_dict(rec.id, rec.path, rec.width, rec.height, {"file_sha256": rec.file_sha256}))
        mask = im.staple.mask if method == "staple" else im.majority
        if not mask.any():
            empty.append(rec.path)
            continue
        prov = Provenance(source="consensus", annotator=name, tool_version=tool_version(), time_utc=now)
        extra = {"label": gathered.labels[rec.path], "raters": list(im.raters), "provenance": prov.to_json()}
        anns.append(coco.annotation_dict(len(anns) + 1, rec.id, cats[gathered.labels[rec.path]], mask, extra=extra))
    info = {"description": f"dermaseg {name} of {', '.join(gathered.raters)}", "version": tool_version(),
            "date_created": now}  # fmt: skip
    out = Path(coco_path)
    try:
        coco.write_json_atomic(coco.dataset_dict(images, anns, [(i, n) for n, i in cats.items()], info), out)
    except OSError as e:
        raise StoreError(
            f"{out}: cannot write the COCO file ({e.strerror or e}); is the disk full or the folder read-only?"
        ) from None
    return ConsensusReport(out, len(anns), tuple(empty))


def _category_ids(project_labels: Collection[str], used: Collection[str]) -> Mapping[str, int]:
    """{label: category id}: the project's labels numbered from 1 in order, then any other used label."""
    names = list(dict.fromkeys([*project_labels, *used]))
    return {n: i for i, n in enumerate(names, start=1)}
