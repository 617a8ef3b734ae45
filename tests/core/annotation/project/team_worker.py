"""Helper for the concurrency tests: one annotator's process working through a team project.

Usage: python team_worker.py DB USER [PAUSE_S]. DB: an SQLite file or a postgresql:// URL. Prints "READY"
once connected, waits for a line on stdin (so that every process starts at once), then loops: claim the
next image ("CLAIMED <id>"), save an annotation under its name ("SAVED <id>"), submit ("SUBMITTED <id>"),
each line printed only after its transaction committed, pausing PAUSE_S seconds between steps; "DONE" when
nothing is left for it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from dermaseg.core.annotation.project import Provenance, annotations, assignments, images
from dermaseg.core.annotation.project.database import Database


def main(target: str, user: str, pause_s: float) -> None:
    db = Database.server(target) if target.startswith("postgresql") else Database.sqlite(Path(target))
    print("READY", flush=True)
    sys.stdin.readline()
    rng = np.random.default_rng(abs(hash(user)) % 2**32)
    while (image_id := assignments.claim_next(db, user)) is not None:
        print(f"CLAIMED {image_id}", flush=True)
        time.sleep(pause_s)
        rec = images.image(db, image_id)
        mask = np.zeros((rec.height, rec.width), dtype=bool)
        y, x = int(rng.integers(0, rec.height // 2)), int(rng.integers(0, rec.width // 2))
        mask[y : y + rec.height // 3, x : x + rec.width // 3] = True
        annotations.add_annotation(db, image_id, mask, provenance=Provenance(source="manual", annotator=user))
        print(f"SAVED {image_id}", flush=True)
        time.sleep(pause_s)
        assignments.submit(db, user, image_id)
        print(f"SUBMITTED {image_id}", flush=True)
    print("DONE", flush=True)
    db.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
