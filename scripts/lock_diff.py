"""Print what moved between two locks (``name old -> new``, ``+name new``, ``-name old``), one line.

python3 scripts/lock_diff.py requirements/cpu-py311.lock .venv-upgrade/newest.lock
"""

import re
import sys


def pins(path: str) -> dict[str, str]:
    """``{normalized name: version}`` of a uv/pip-compile lock file."""
    out = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\;]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return out


def main(old_path: str, new_path: str) -> None:
    old, new = pins(old_path), pins(new_path)
    moved = [f"{k} {old[k]} -> {new[k]}" for k in sorted(old) if k in new and old[k] != new[k]]
    moved += [f"+{k} {new[k]}" for k in sorted(set(new) - set(old))]
    moved += [f"-{k} {old[k]}" for k in sorted(set(old) - set(new))]
    print("; ".join(moved))


if __name__ == "__main__":
    main(*sys.argv[1:3])
