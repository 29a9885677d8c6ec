"""Running one evaluation suite on a run and writing its result where it belongs.

Where a result goes (:func:`result_path`):

* ``evals/<suite>.json`` when the options are the run's planned ones (``run.json``), or the run has no plan
  for that suite (a run of ``ablate train``): the result tables and ``ablate sweep status`` read;
* ``evals/adhoc/<suite>-<spec hash>.json`` for any other options (``ablate eval --limit 5``), so an ad-hoc
  evaluation never replaces a planned one, unless ``overwrite`` says so;
* anywhere with ``out``, leaving the run directory untouched (then it needs no lock, e.g. for a run that is
  still training).

Writing into a run directory takes its lock (:meth:`RunDir.lock`), so an evaluation never races the trainer
or another evaluation. Every result records its spec (all options, resolved) and spec hash, its provenance
(checkpoint, step, config hash), the device, the elapsed time and library versions; an ``eval`` event goes
into ``events.jsonl``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.plan import plan_from_record
from evals.results import ARRAYS_KEY, write_result
from evals.suites import get_runner, resolve_options, spec_hash
from harness.config_schema import to_dict
from harness.training.loading import LoadedRun, load_run
from harness.training.rundir import RunDir


def result_path(run: RunDir, suite: str, options: Any, *, overwrite: bool = False) -> tuple[Path, bool]:
    """Where the result of ``suite`` with ``options`` goes in ``run``, and whether it is the planned one."""
    planned = plan_from_record(run.read_record()).get(suite)
    digest = spec_hash(suite, options)
    if planned is None:
        return run.evals / f"{suite}.json", False
    if spec_hash(suite, planned) == digest:
        return run.evals / f"{suite}.json", True
    if overwrite:
        return run.evals / f"{suite}.json", False
    return run.evals / "adhoc" / f"{suite}-{digest}.json", False


def run_loaded_suite(
    loaded: LoadedRun,
    suite: str,
    options: dict[str, Any] | Any | None = None,
    *,
    overwrite: bool = False,
    out: str | Path | None = None,
) -> tuple[Path, dict]:
    """Run ``suite`` on an already loaded run, write its result, log the event; returns (path, record).

    ``options`` is a mapping (checked strictly) or the suite's options object."""
    if options is None or isinstance(options, dict):
        options = resolve_options(suite, options)
    runner = get_runner(suite)
    run = loaded.run
    with contextlib.nullcontext() if out is not None else run.lock(f"ablate eval --suite {suite}"):
        if out is not None:
            path, planned = Path(out), False
        else:
            path, planned = result_path(run, suite, options, overwrite=overwrite)
        t0 = time.time()
        payload = runner(loaded, options)
        elapsed = time.time() - t0
        arrays = payload.pop(ARRAYS_KEY, None)
        if arrays:
            maps = path.with_name(f"{path.stem}_maps.npz")
            maps.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(maps, **arrays)
            payload["maps_file"] = maps.name
            payload["maps"] = {k: list(v.shape) for k, v in arrays.items()}
        record = {
            **payload,
            "spec": to_dict(options),
            "spec_hash": spec_hash(suite, options),
            "planned": planned,
            "limit": options.limit,
            "device": str(loaded.device),
            "elapsed_s": round(elapsed, 3),
        }
        write_result(path, suite, record, loaded.provenance())
        if out is None:
            metrics = payload.get("metrics") or {}
            run.event(
                "eval",
                suite=suite,
                step=loaded.step,
                checkpoint=loaded.checkpoint,
                config_hash=loaded.config_hash,
                spec_hash=record["spec_hash"],
                planned=planned,
                path=str(path),
                elapsed_s=round(elapsed, 3),
                metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            )
    return path, record


def run_suite(
    run_dir: str | Path,
    suite: str,
    *,
    step: int | None = None,
    device: str = "auto",
    scan_backend: str | None = None,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    out: str | Path | None = None,
) -> Path:
    """Load ``run_dir`` at ``step`` (default: its latest checkpoint), run ``suite`` and write its result;
    returns the path written. A wrong suite name or option fails before the model is loaded."""
    resolved = resolve_options(suite, options)
    loaded = load_run(run_dir, step=step, device=device, scan_backend=scan_backend)
    return run_loaded_suite(loaded, suite, resolved, overwrite=overwrite, out=out)[0]
