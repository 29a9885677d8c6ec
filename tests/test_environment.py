"""The software stack: what the harness records of it, and that the test environment is the locked one."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from harness.environment import distribution_version, software_stack, stack_changes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from lock_diff import pins  # noqa: E402


def test_software_stack_names_installed_versions_and_the_commit():
    stack = software_stack()
    assert stack["packages"]["torch"] == torch.__version__
    assert stack["packages"]["lm_eval"] == metadata.version("lm-eval")
    assert distribution_version("no-such-distribution-anywhere") is None
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert stack["commit"] == head.stdout.strip() and isinstance(stack["dirty"], bool)


def test_stack_changes_name_each_moved_package():
    old = {"python": "3.11.7", "commit": "a", "packages": {"torch": "2.13.0", "numpy": "2.4.6"}}
    new = {"python": "3.11.7", "commit": "b", "packages": {"torch": "2.14.1", "numpy": "2.4.6"}}
    assert stack_changes(old, new) == ["commit a -> b", "torch 2.13.0 -> 2.14.1"]
    assert stack_changes(None, new) == [] and stack_changes(new, new) == []


def test_installed_environment_is_the_lock():
    """Under scripts/bootstrap.sh's virtualenv, every locked distribution is installed at its locked
    version: the demo, the tests and CI run the stack the lock names, whatever PyPI released since."""
    venv = Path(os.environ.get("ABLATE_VENV", ROOT / ".venv")).resolve()
    if Path(sys.prefix).resolve() != venv:
        pytest.skip(f"not running in the bootstrapped virtualenv {venv} (sys.prefix is {sys.prefix})")
    lock = ROOT / os.environ.get("ABLATE_LOCK", "requirements/cpu-py311.lock")
    locked = pins(str(lock))
    assert len(locked) > 100 and "torch" in locked and "lm-eval" in locked
    differ = {
        name: (version, distribution_version(name))
        for name, version in locked.items()
        if distribution_version(name) != version
    }
    assert differ == {}, f"installed versions differ from {lock} (locked, installed): {differ}"


def test_gpu_bundle_takes_its_versions_from_the_lock(tmp_path):
    """scripts/gpu/wheels.txt names what the GPU machine lacks; where the lock holds a distribution, the
    carried wheel is the locked version, and a second pin of it is refused."""
    sys.path.insert(0, str(ROOT / "scripts" / "gpu"))
    import bundle

    locked = pins(str(ROOT / "requirements" / "cpu-py311.lock"))
    carried = bundle.read_pins()
    assert {"lm-eval", "datasets", "submitit"} <= set(carried)
    assert all(carried[name] == locked[name] for name in carried if name in locked)
    assert set(carried) - set(locked) == {"liger-kernel"}  # a GPU-only package: pinned in wheels.txt
    doubled = tmp_path / "wheels.txt"
    doubled.write_text("datasets==1.0\n")
    with pytest.raises(SystemExit) as refused:
        bundle.read_pins(doubled)
    assert "write the name only" in str(refused.value)
