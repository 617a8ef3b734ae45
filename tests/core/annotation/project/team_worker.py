"""Helper for the concurrency tests: one annotator's process working through a team project.

Usage: python team_worker.py FOLDER DB USER [PAUSE_S]. DB: the project's postgresql:// URL, or - (SQLite).
Prints "READY" once connected, waits for a line on stdin (so that every process starts at once), then loops: claim the
next image ("CLAIMED <id>"), save an annotation under its name ("SAVED <id>"), submit ("SUBMITTED <id>"),
each line printed only after its transaction committed, pausing PAUSE_S seconds between steps; "DONE" when
nothing is left for it.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from dermaseg.core.annotation.project import Project, Provenance


def main(folder: str, db: str, user: str, pause_s: float) -> None:
    project = Project.open(folder, db=None if db == "-" else db, scan=False)
    print("READY", flush=True)
    sys.stdin.readline()
    rng = np.random.default_rng(abs(hash(user)) % 2**32)
    while (image_id := project.team.claim_next(user)) is not None:
        print(f"CLAIMED {image_id}", flush=True)
        time.sleep(pause_s)
        rec = project.image(image_id)
        mask = np.zeros((rec.height, rec.width), dtype=bool)
        y, x = int(rng.integers(0, rec.height // 2)), int(rng.integers(0, rec.width // 2))
        mask[y : y + rec.height // 3, x : x + rec.width // 3] = True
        project.add_annotation(image_id, mask, provenance=Provenance(source="manual", annotator=user))
        print(f"SAVED {image_id}", flush=True)
        time.sleep(pause_s)
        project.team.submit(user, image_id)
        print(f"SUBMITTED {image_id}", flush=True)
    print("DONE", flush=True)
    project.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
