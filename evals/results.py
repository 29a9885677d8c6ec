"""One JSON file per suite result (``<run_dir>/evals/<suite>.json`` for planned results, see
:mod:`evals.runner`): what the analysis layer reads.

Every result carries its provenance (checkpoint step, config hash, run name), the settings it ran with
(shots, limits, templates), sample counts and the software stack that produced it (``environment``: the
versions of torch, lm-eval, datasets, ... and the project's commit, :mod:`harness.environment`), so a
number in a table can always be traced back to the weights and code behind it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write_text
from harness.environment import software_stack

ARRAYS_KEY = "_arrays"  # a payload's numpy arrays: saved beside the result as <result stem>_maps.npz


def write_result(path: Path, suite: str, payload: dict[str, Any], provenance: dict) -> Path:
    """Atomically write the result of ``suite`` to ``path``; returns it."""
    record = {
        "suite": suite,
        **provenance,
        "created_at": time.time(),
        "environment": software_stack(),
        **payload,
    }
    atomic_write_text(path, json.dumps(record, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
