"""Two releases of one project at once, each in its own process on one SQLite file (run by
test_release_numbering.py): `python -m tests.labelling.release_race setup|release NAME DIR`.

`release` publishes through the real local storage, but first drops a `NAME.publishing` file in
DIR and waits for DIR/go: the test can then see which releases were publishing at the same time.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import django


def setup() -> None:
    """A project with three approved items."""
    from labelling.services.consensus import consensus_compute
    from labelling.services.imports import predictions_import
    from labelling.services.labels import labels_import
    from labelling.services.projects import project_create_or_update
    from labelling.spec import parse_spec

    spec = {"slug": "race", "labels": ["match", "no_match"], "overlap": {"min": 2, "max": 2,
            "target_confidence": 0.9}}  # fmt: skip
    project, _ = project_create_or_update(spec=parse_spec(spec))
    keys = ("a", "b", "c")
    predictions = [
        {"external_id": k, "payload": {"text": k}, "model_version": "m1",
         "probabilities": {"match": 0.6, "no_match": 0.4}}
        for k in keys
    ]  # fmt: skip
    lines = "\n".join(json.dumps(p) for p in predictions).encode()
    predictions_import(project=project, stream=io.BytesIO(lines), fmt="jsonl")
    labels = [{"external_id": k, "labeller": w, "label": "match"} for k in keys for w in "xy"]
    lines = "\n".join(json.dumps(label) for label in labels).encode()
    labels_import(project=project, stream=io.BytesIO(lines), fmt="jsonl")
    consensus_compute(project=project)


def release(name: str, folder: Path) -> None:
    """One release; prints its version, or the conflict that refused it."""
    from core.exceptions import Conflict
    from labelling.models import Project
    from labelling.releases.storage import LocalStorage
    from labelling.services.releases import release_create

    publish = LocalStorage.publish

    def held(self: LocalStorage, **kwargs: Any) -> str:
        (folder / f"{name}.publishing").touch()
        while not (folder / "go").exists():
            time.sleep(0.02)
        return publish(self, **kwargs)

    LocalStorage.publish = held  # type: ignore[method-assign]
    try:
        made = release_create(project=Project.objects.get(slug="race"))
    except Conflict as exc:
        print(f"conflict: {exc}")
        return
    print(f"v{made.version}")


if __name__ == "__main__":
    django.setup()
    if sys.argv[1] == "setup":
        setup()
    else:
        release(sys.argv[2], Path(sys.argv[3]))
