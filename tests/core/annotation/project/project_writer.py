"""Helper for the crash test: accept annotations in a loop, print "SAVED <id>" after each commit.

Usage: python project_writer.py PROJECT_FOLDER SEED [DATABASE_URL]. Prints "READY" once the project is open, then
runs until killed. Between saves it also edits
and undoes/redoes an older annotation, so kills land inside every kind of transaction.
"""

from __future__ import annotations

import sys

import numpy as np

from dermaseg.core.annotation.project import Project, Provenance


def main(folder: str, seed: int, db: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    project = Project.open(folder, db=db, scan=False)
    images = project.images()
    saved: list[int] = []
    print("READY", flush=True)
    while True:
        rec = images[int(rng.integers(len(images)))]
        mask = np.zeros((rec.height, rec.width), dtype=bool)
        y, x = int(rng.integers(0, rec.height - 4)), int(rng.integers(0, rec.width - 4))
        mask[y : y + int(rng.integers(2, 20)), x : x + int(rng.integers(2, 20))] = True
        polygons = {"width": rec.width, "height": rec.height, "parts": []}
        ann = project.add_annotation(
            rec.id, mask, polygons=polygons, provenance=Provenance(prompts={"seed": seed}, model_id="writer")
        )
        print(f"SAVED {ann.id}", flush=True)
        saved.append(ann.id)
        if len(saved) % 3 == 0:  # edit an annotation, undo the edit, redo it: the annotation stays
            project.update_annotation(ann.id, mask=np.roll(mask, 1, axis=0), polygons=polygons)
            project.undo(rec.id)
            project.redo(rec.id)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
