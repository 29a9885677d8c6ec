"""Fill ``vendor_gpu/`` with what a run on the lent GPU machine needs and that machine lacks (run HERE).

    python scripts/gpu/bundle.py wheels    # vendor_gpu/wheels/: cp312 wheels of scripts/gpu/wheels.txt
    python scripts/gpu/bundle.py check     # offline: every requirement met by a wheel or by the machine
    python scripts/gpu/bundle.py data      # vendor_gpu/data/data.tar.xz: corpus packs + benchmark copies
    python scripts/gpu/bundle.py sizes     # what travels, against the 64 MiB limit

``scripts/gpu/bundle.sh`` runs them all (with the kernel sources); ``scripts/gpu/setup.sh`` unpacks the
result there. Every step is idempotent: what is already in place is checked and kept.

Wheels: ``pip download --no-deps --only-binary=:all:`` for CPython 3.12 on manylinux x86_64 (the machine's
python3), one pinned version of each distribution; a distribution published only as an sdist is built
here with ``pip wheel --no-deps`` and must come out pure Python. ``check`` reads every wheel's METADATA,
evaluates its requirements for CPython 3.12 on Linux x86_64 (extras followed where a carried wheel asks for
one), and fails on a requirement that neither a carried wheel nor ``scripts/gpu/gpu_image.txt`` meets, on
a carried version outside a specifier, on two versions of one distribution and on a wheel tag the machine
cannot install; then it asks pip itself to resolve the install offline (``--dry-run --no-index``) against
the wheels plus empty stand-in wheels for the machine's own packages.

Data: the packs (``ablate data prepare``) and the prepared benchmark copies (``python -m
evals.benchmark_data prepare``; only the directories the lm-eval task configs read, not the generated task
YAMLs, which name this machine's paths). Measured on 2026-11-29 with these packs: the packs' parquet files
are zstd-compressed per 256-row group, so tar + xz of them gains nothing (42.5 MB -> 40.3 MB, zstd -19
--long 40.3 MB); rewritten as uncompressed parquet (same rows, schema and row groups) they are 104.9 MB and
compress to 25.6 MB with xz -9e (zstd -19 --long=27: 26.4 MB). The benchmark Arrow copies: 41.9 MB -> 4.8
MB with xz -9e (zstd: 5.1 MB). So the packs travel as uncompressed parquet in one tar.xz (python's lzma
unpacks it there; no xz or zstd binary needed). The packs' manifests are kept unchanged: their sha256 names
the zstd file built here, the content identity the loader and the tokenizer cache use; ``data.json``
records a digest of every file's rows, which setup.sh checks after unpacking.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from gpu_setup import rows_digest  # scripts/gpu/ is this script's directory, first on sys.path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "vendor_gpu"
WHEELS = VENDOR / "wheels"
DATA = VENDOR / "data"
PINS = ROOT / "scripts" / "gpu" / "wheels.txt"
LOCK = ROOT / "requirements" / "cpu-py311.lock"
GPU_IMAGE = ROOT / "scripts" / "gpu" / "gpu_image.txt"
LIMIT_MIB, TARGET_MIB = 64, 56
PACKS = ("web", "books", "code", "imdb", "gpt2")
DATA_RECIPE = 1  # bump when what `data` writes changes
PY_VERSION = "3.12"
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# The machine's glibc is new (Ubuntu 24.04's python 3.12.3); manylinux tags up to 2_39 install there.
MAX_GLIBC_MINOR = 39


def log(msg: str) -> None:
    print(f"[bundle] {msg}", file=sys.stderr, flush=True)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------------------ wheels


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` of the locked CPU environment (``NAME==VERSION \\`` entries)."""
    return {
        canonical(m[1]): m[2]
        for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\;]+)", path.read_text(), re.M)
    }


def read_pins(path: Path = PINS, lock: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` of the carried distributions: a bare ``NAME`` line takes the locked
    CPU environment's version (requirements/cpu-py311.lock), so the GPU machine runs what CI tested; only a
    distribution the lock does not hold is pinned here as ``NAME==VERSION``."""
    locked = read_lock(lock)
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        key = canonical(name.strip())
        if key in pins:
            sys.exit(f"{path}: {name} is listed twice")
        if sep and key in locked:
            sys.exit(f"{path}: {name} is pinned here and in {lock.name} ({locked[key]}): write the name only")
        if not sep and key not in locked:
            sys.exit(f"{path}: {name} is not in {lock.name}: pin it here as {name}==VERSION")
        if sep and not version.strip():
            sys.exit(f"{path}: '{line}' is not NAME or NAME==VERSION")
        pins[key] = version.strip() if sep else locked[key]
    return pins


def read_gpu_image(path: Path = GPU_IMAGE) -> dict[str, str | None]:
    """``{canonical name: version or None}`` of what the GPU machine's python3 already holds."""
    have = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            have[canonical(name)] = version.strip() or None
    return have


def wheel_files(folder: Path = WHEELS) -> dict[str, list[Path]]:
    from packaging.utils import parse_wheel_filename

    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.whl")):
        name, _version, _build, _tags = parse_wheel_filename(path.name)
        found.setdefault(canonical(name), []).append(path)
    return found


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def fetch_wheels(folder: Path = WHEELS, python_version: str = PY_VERSION) -> None:
    """Download (or build) one wheel per pin into ``folder``; drop wheels of other versions or names."""
    from packaging.utils import parse_wheel_filename

    pins = read_pins()
    folder.mkdir(parents=True, exist_ok=True)
    for name, paths in wheel_files(folder).items():
        for path in paths:
            version = str(parse_wheel_filename(path.name)[1])
            if pins.get(name) != version:
                log(f"removing {path.name} (not pinned)")
                path.unlink()
    have = wheel_files(folder)
    for name, version in pins.items():
        if name in have:
            continue
        spec = f"{name}=={version}"
        platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
        try:
            _pip(
                "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                "--implementation", "cp", *platform_args, "-d", str(folder), spec,
            )  # fmt: skip
            log(f"downloaded {spec}")
        except RuntimeError as e:
            if "No matching distribution" not in str(e) and "from versions: none" not in str(e):
                raise
            cause = e
            with tempfile.TemporaryDirectory() as tmp:
                _pip("wheel", "-q", "--no-deps", "-w", tmp, spec)
                (built,) = Path(tmp).glob("*.whl")
                tags = parse_wheel_filename(built.name)[3]
                if not all(t.abi == "none" and t.platform == "any" for t in tags):
                    raise RuntimeError(
                        f"{spec} has no cp{python_version} wheel and builds a binary one here"
                    ) from cause
                shutil.copy2(built, folder / built.name)
            log(f"built {spec} from its sdist (pure Python)")
    missing = sorted(set(pins) - set(wheel_files(folder)))
    if missing:
        sys.exit(f"no wheel for {', '.join(missing)}")


def _metadata(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        (meta,) = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        text = z.read(meta).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def _environment(python_version: str, extra: str = "") -> dict[str, str]:
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": extra,
    }


def _installable(path: Path, python_version: str) -> bool:
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename

    major, minor = (int(x) for x in python_version.split("."))
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(MAX_GLIBC_MINOR, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    ok = set(cpython_tags((major, minor), platforms=platforms))
    ok |= set(compatible_tags((major, minor), f"cp{major}{minor}", platforms=platforms))
    return bool(set(parse_wheel_filename(path.name)[3]) & ok)


def check_closure(folder: Path = WHEELS, python_version: str = PY_VERSION, quiet: bool = False) -> list[str]:
    """Every requirement of every carried wheel, evaluated for the GPU machine, must be met. Returns the
    problems (empty: complete) and prints what was assumed about the machine's own packages."""
    from packaging.requirements import Requirement
    from packaging.utils import parse_wheel_filename
    from packaging.version import Version

    problems, assumed = [], set()
    files = wheel_files(folder)
    gpu = read_gpu_image()
    carried = {}
    for name, paths in files.items():
        if len(paths) > 1:
            problems.append(f"{name}: {len(paths)} versions carried ({', '.join(p.name for p in paths)})")
        if name in gpu:
            problems.append(f"{name}: carried, but the machine has it (it would shadow the machine's own)")
        for path in paths:
            if not _installable(path, python_version):
                problems.append(f"{path.name}: no tag installable by CPython {python_version}, x86_64 Linux")
        carried[name] = (Version(str(parse_wheel_filename(paths[0].name)[1])), paths[0])

    todo = [(name, "") for name in carried]
    seen = set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        version, path = carried[name]
        for line in _metadata(path):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(_environment(python_version, extra)):
                continue
            dep = canonical(req.name)
            who = f"{name}{f'[{extra}]' if extra else ''} {version} needs {req}"
            if dep in carried:
                if not req.specifier.contains(carried[dep][0], prereleases=True):
                    problems.append(f"{who}; carried: {carried[dep][0]}")
                todo += [(dep, e) for e in req.extras]
            elif dep in gpu:
                if gpu[dep] is None:
                    if str(req.specifier) or req.extras:
                        assumed.add(f"{dep}{req.specifier}{sorted(req.extras) or ''} (for {name})")
                elif not req.specifier.contains(Version(gpu[dep]), prereleases=True):
                    problems.append(f"{who}; the machine has {gpu[dep]}")
            else:
                problems.append(f"{who}: neither carried nor on the machine: add it to {PINS.name}")
    if not quiet:
        for line in sorted(assumed):
            log(f"assumed met by the machine (its version is not recorded): {line}")
    return problems


def _stub_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel that stands in for a package the machine already has (for pip's resolver)."""
    dist = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    wheel = "Wheel-Version: 1.0\nGenerator: jamba-ablate bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", meta)
        z.writestr(f"{dist}.dist-info/WHEEL", wheel)
        z.writestr(f"{dist}.dist-info/RECORD", "")


def pip_dry_run(folder: Path = WHEELS, python_version: str = PY_VERSION) -> dict:
    """pip's own resolution of the project's run-time roots, offline, against the carried wheels plus
    stand-ins for the machine's packages (at their recorded version, else at this environment's version,
    else 0.0.0.dev0 when nothing asks for a version). Returns ``{name: version}`` of what pip would install
    from the carried wheels."""
    from importlib import metadata

    gpu = read_gpu_image()
    with tempfile.TemporaryDirectory() as tmp:
        stubs = Path(tmp) / "stubs"
        stubs.mkdir()
        for name, version in gpu.items():
            if version is None:
                try:
                    version = metadata.version(name)
                except metadata.PackageNotFoundError:
                    version = "0.0.0.dev0"
            _stub_wheel(stubs, name, version)
        pins = read_pins()
        roots = [f"{n}=={pins[n]}" for n in ("lm-eval", "datasets", "submitit", "liger-kernel")]
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--ignore-installed", "-q",
            "--find-links", str(folder), "--find-links", str(stubs), "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp",
            *[a for p in PLATFORMS for a in ("--platform", p)],
            "--target", str(Path(tmp) / "target"), "--report", str(Path(tmp) / "report.json"), *roots,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"pip could not resolve {' '.join(roots)} offline:\n{proc.stdout}{proc.stderr}")
        report = json.loads((Path(tmp) / "report.json").read_text())
    chosen = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    carried = {n: v for n, v in chosen.items() if n not in gpu}
    unused = sorted(set(read_pins()) - set(carried))
    machine = len(chosen) - len(carried)
    log(f"pip resolves {' '.join(roots)} offline: {len(carried)} carried wheels, {machine} of the machine's")
    if unused:
        log(f"carried but not pulled in by those roots: {', '.join(unused)}")
    return carried


# -------------------------------------------------------------------------------------------------- data


def _ablate(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True)


def _benchmark_dirs() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from evals.benchmark_data import LOCAL_TASKS

    return sorted({rel for spec in LOCAL_TASKS.values() for rel in spec.splits.values()})


def _stamp(data_dir: Path, bench: list[str]) -> str:
    """What the archive is made of: the pack and benchmark manifests, the folders taken, the recipe."""
    h = hashlib.sha256(f"recipe {DATA_RECIPE}\n".encode())
    for pack in PACKS:
        h.update((data_dir / "packs" / pack / "manifest.json").read_bytes())
    h.update((data_dir / "benchmarks" / "manifest.json").read_bytes())
    h.update("\n".join(bench).encode())
    return h.hexdigest()[:16]


def _add(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def build_data(out: Path = DATA, force: bool = False) -> dict:
    """vendor_gpu/data/data.tar.xz (+ data.json): packs as uncompressed parquet, benchmark subset."""
    import lzma

    import pyarrow.parquet as pq

    _ablate("-m", "ablate.cli", "data", "prepare", "--packs", ",".join(PACKS))
    _ablate("-m", "evals.benchmark_data", "prepare")
    sys.path.insert(0, str(ROOT))
    from harness.data.config import resolve_data_dir

    data_dir = resolve_data_dir(None)
    bench = _benchmark_dirs()
    stamp = _stamp(data_dir, bench)
    archive, index = out / "data.tar.xz", out / "data.json"
    if not force and archive.is_file() and index.is_file():
        old = json.loads(index.read_text())
        if old.get("stamp") == stamp and old.get("archive_sha256") == _sha256(archive):
            log(f"data: {archive.relative_to(ROOT)} is up to date ({stamp})")
            return old
    log(f"data: packing {', '.join(PACKS)} and {len(bench)} benchmark folders from {data_dir} (xz -9e) ...")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    tmp = out / ".data.tar.xz.tmp"
    xz = lzma.open(tmp, "wb", preset=9 | lzma.PRESET_EXTREME)
    with xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for pack in PACKS:
            for path in sorted((data_dir / "packs" / pack).iterdir()):
                rel = f"packs/{pack}/{path.name}"
                if path.name.startswith("."):
                    continue
                if path.suffix == ".parquet":
                    table = pq.read_table(path)
                    buf = io.BytesIO()
                    pq.write_table(table, buf, compression="none", row_group_size=256)
                    _add(tar, rel, buf.getvalue())
                    files[rel] = {"rows": table.num_rows, "rows_sha256": rows_digest(table),
                                  "original_sha256": _sha256(path)}  # fmt: skip
                else:
                    _add(tar, rel, path.read_bytes())
                    files[rel] = {"sha256": _sha256(path)}
        _add(tar, "benchmarks/manifest.json", (data_dir / "benchmarks" / "manifest.json").read_bytes())
        for rel_dir in bench:
            for path in sorted((data_dir / "benchmarks" / rel_dir).rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    _add(tar, f"benchmarks/{path.relative_to(data_dir / 'benchmarks')}", path.read_bytes())
    tmp.replace(archive)
    result = {
        "recipe": DATA_RECIPE,
        "stamp": stamp,
        "archive": archive.name,
        "archive_sha256": _sha256(archive),
        "archive_bytes": archive.stat().st_size,
        "source_data_dir": str(data_dir),
        "packs": list(PACKS),
        "benchmark_dirs": bench,
        "files": files,
        "note": "parquet files rewritten uncompressed (rows, schema and row groups unchanged) so that xz "
        "compresses them; pack manifests unchanged (their sha256 is the original zstd file's)",
    }
    index.write_text(json.dumps(result, indent=1) + "\n")
    log(f"data: wrote {archive.relative_to(ROOT)} ({archive.stat().st_size / 2**20:.1f} MiB)")
    return result


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- sizes


def _du(paths) -> int:
    """Bytes that travel: a symbolic link travels as a link (the device tool never follows one)."""
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_symlink():
            total += p.lstat().st_size
        elif p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return total


def sizes() -> bool:
    """Print what travels with carry ["vendor_gpu"]; False when over the limit."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    tree = _du(ROOT / f for f in tracked if f)
    kernels = [p for p in VENDOR.iterdir() if p.name not in ("wheels", "data")] if VENDOR.is_dir() else []
    rows = [
        ("wheels (vendor_gpu/wheels)", _du([WHEELS])),
        ("data (vendor_gpu/data)", _du([DATA])),
        ("kernel sources (vendor_gpu/*)", _du(kernels)),
        ("git tree (tracked + untracked, not ignored)", tree),
    ]
    total = sum(n for _, n in rows)
    print(f"{'what travels':<46}{'MiB':>8}")
    for label, n in rows:
        print(f"{label:<46}{n / 2**20:>8.2f}")
    print(f"{'total':<46}{total / 2**20:>8.2f}   (limit {LIMIT_MIB} MiB, aim <= {TARGET_MIB} MiB)")
    if total > TARGET_MIB * 2**20:
        print(f"WARNING: over {TARGET_MIB} MiB: shrink the data (e.g. a subset of the books pack)")
    return total <= LIMIT_MIB * 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["wheels", "check", "data", "sizes"])
    parser.add_argument("--wheel-dir", type=Path, default=WHEELS)
    parser.add_argument("--python-version", default=PY_VERSION, help="target CPython (tests: 3.11)")
    parser.add_argument("--force", action="store_true", help="data: rebuild even when up to date")
    args = parser.parse_args(argv)
    if args.step == "wheels":
        fetch_wheels(args.wheel_dir, args.python_version)
    elif args.step == "check":
        problems = check_closure(args.wheel_dir, args.python_version)
        if problems:
            print("\n".join(f"MISSING/CONFLICT: {p}" for p in problems), file=sys.stderr)
            return 1
        n = sum(len(v) for v in wheel_files(args.wheel_dir).values())
        log(f"closure complete: {n} wheels, every requirement carried or on the machine")
        pip_dry_run(args.wheel_dir, args.python_version)
    elif args.step == "data":
        build_data(force=args.force)
    else:
        return 0 if sizes() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
