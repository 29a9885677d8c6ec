"""The Python half of scripts/gpu/setup.sh, run THERE by the machine's python3 (standard library, pyarrow
and packaging only: nothing of the bundle needs to be importable yet).

    python3 scripts/gpu/gpu_setup.py data DATA_DIR    # unpack vendor_gpu/data/data.tar.xz, check its rows
    python3 scripts/gpu/gpu_setup.py verify SITE      # imports, versions, requirements, ablate.cli --help

``data`` is idempotent: a stamp in DATA_DIR records the archive it came from; the packs and benchmark
folders of a new archive replace the old ones (other contents of DATA_DIR, e.g. tokenized caches, stay).
Every parquet file's rows are checked against the digest bundle.py recorded here, every other file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "vendor_gpu" / "data"
STAMP = ".jamba-bundle-data"


def log(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rows_digest(table) -> str:
    """A digest of a pyarrow table's rows (column by column, values as text): what bundle.py records for
    every parquet file it rewrites and what the unpacking here checks, whatever the file's compression."""
    h = hashlib.sha256()
    for name in table.column_names:
        h.update(name.encode() + b"\0")
        for chunk in table.column(name).chunks:
            for value in chunk.to_pylist():
                h.update(b"\1" if value is None else str(value).encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def unpack_data(data_dir: Path, bundle: Path = DATA) -> int:
    t0 = time.time()
    index = json.loads((bundle / "data.json").read_text())
    archive = bundle / index["archive"]
    stamp = data_dir / STAMP
    if stamp.is_file() and stamp.read_text().strip() == index["archive_sha256"]:
        log(f"data: {data_dir} is up to date ({index['stamp']})")
        return 0
    if _sha256(archive) != index["archive_sha256"]:
        log(f"data: {archive} does not match data.json (rerun scripts/gpu/bundle.sh)")
        return 1
    import pyarrow.parquet as pq

    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=data_dir) as tmp:
        with tarfile.open(archive, "r:xz") as tar:
            if sys.version_info >= (3, 12):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)  # noqa: S202 (our own archive, checked above)
        bad = []
        for rel, expect in index["files"].items():
            path = Path(tmp) / rel
            if "rows_sha256" in expect:
                if rows_digest(pq.read_table(path)) != expect["rows_sha256"]:
                    bad.append(rel)
            elif _sha256(path) != expect["sha256"]:
                bad.append(rel)
        if bad:
            log(f"data: content check failed for {', '.join(bad)}")
            return 1
        targets = [f"packs/{p}" for p in index["packs"]] + ["benchmarks"]
        for rel in targets:
            dst = data_dir / rel
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / rel, dst)
    stamp.write_text(index["archive_sha256"] + "\n")
    n = len(index["files"])
    log(f"data: unpacked {n} files into {data_dir}, rows checked ({time.time() - t0:.1f} s)")
    return 0


def verify(site: Path) -> int:
    """Imports and versions; the carried distributions' requirements against what is installed."""
    from importlib import metadata

    from packaging.requirements import Requirement

    problems = []
    import torch

    if Path(torch.__file__).resolve().is_relative_to(site.resolve()):
        problems.append(f"torch is imported from {site}: the machine's CUDA torch is shadowed")
    import datasets
    import lm_eval
    import submitit

    import evals
    import harness

    for mod in (harness, evals):
        if not Path(mod.__file__).resolve().is_relative_to(ROOT):
            problems.append(f"{mod.__name__} is imported from {mod.__file__}, not from {ROOT}")
    for mod in (lm_eval, datasets, submitit):
        if not Path(mod.__file__).resolve().is_relative_to(site.resolve()):
            log(f"WARNING: {mod.__name__} is imported from {mod.__file__}, not from {site}")
    log(
        f"imports ok: torch {torch.__version__} (cuda {torch.version.cuda}, available "
        f"{torch.cuda.is_available()}), lm_eval {lm_eval.__version__}, datasets {datasets.__version__}, "
        f"submitit {submitit.__version__}, harness from {Path(harness.__file__).parent}"
    )
    carried = [d for d in metadata.distributions(path=[str(site)])]
    for dist in carried:
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{dist.metadata['Name']} needs {req}: not installed")
                continue
            if not req.specifier.contains(have, prereleases=True):
                log(f"WARNING: {dist.metadata['Name']} asks for {req}, the machine has {have}")
    from evals.benchmark_data import read_benchmark_manifest
    from harness.data.sources import read_manifest

    with_data = os.environ.get("JAMBA_SETUP_DATA", "1") != "0"  # else setup.sh was told no data this lease
    if with_data:
        missing = [p for p in ("web", "books", "code", "imdb", "gpt2") if read_manifest(None, p) is None]
        if missing:
            problems.append(f"packs missing under $ABLATE_DATA_DIR: {', '.join(missing)}")
        if not (read_benchmark_manifest() or {}).get("complete"):
            problems.append("benchmark copies missing under $ABLATE_DATA_DIR/benchmarks")
    from harness.kernels.fused import fused_available

    why = fused_available()  # model.kernels: auto falls back to eager without them; say so up front
    log("fused kernels (liger-kernel, triton): " + ("ready" if why is None else f"WARNING: {why}"))
    cli = subprocess.run([sys.executable, "-m", "ablate.cli", "--help"], capture_output=True, text=True)
    if cli.returncode:
        problems.append(f"python3 -m ablate.cli --help failed:\n{cli.stdout}{cli.stderr}")
    for p in problems:
        log(f"ERROR: {p}")
    if not problems:
        data = ", packs and benchmarks" if with_data else ""
        log(f"verified: {len(carried)} carried distributions{data}, ablate.cli --help")
    return 1 if problems else 0


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("data", "verify"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "data":
        return unpack_data(Path(sys.argv[2]))
    return verify(Path(sys.argv[2]))


if __name__ == "__main__":
    sys.exit(main())
