"""A full disk under a run directory, for real: a small tmpfs (mounted here when the machine lets us) whose
space runs out at a checkpoint save. The trainer ends with one line naming the path and the free space, the
run's status says `failed: disk full`, the previous checkpoint stays the resume point, and once space is
freed the same command resumes it to losses equal to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.diskspace import DiskFull, disk_error, free_bytes, room_warning
from harness.training.checkpoint import list_checkpoints
from harness.training.config import load_run_config
from harness.training.rundir import read_jsonl
from harness.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras".split()


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs at tmp_path/disk (unmounted afterwards); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the ENOSPC unit test still runs"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def config(tmp_path: Path) -> Path:
    rng = torch.Generator().manual_seed(0)
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for _ in range(300):
            idx = torch.randint(0, len(WORDS), (60,), generator=rng).tolist()
            f.write(json.dumps({"text": " ".join(WORDS[i] for i in idx) + "."}) + "\n")
    cfg = {
        "name": "disk-test",
        "model": {"preset": "tiny-1to7"},
        "data": {
            "train": [{"name": "toy", "data_files": [str(corpus)]}],
            "validation": [{"name": "toy", "data_files": [str(corpus)]}],
            "tokenizer": {"kind": "bpe", "vocab_size": 384},
            "data_dir": str(tmp_path / "data"),
        },
        "train": {"seq_len": 64, "global_batch": 4, "micro_batch": 4, "steps": 12, "seed": 0,
                  "checkpoint_every": 4, "keep_last": 1},
        "optim": {"lr": 3e-3, "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r}


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    size = free_bytes(disk) - leave
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(size, 0))  # tmpfs counts written pages, not a sparse file's length
    return filler


def test_disk_error_recognises_a_full_disk_in_its_many_voices(tmp_path):
    enospc = OSError(28, "No space left on device", str(tmp_path / "x"))
    assert isinstance(disk_error(enospc, tmp_path), DiskFull)
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2851392 vs 2851344")
    wrapped.__context__ = enospc  # torch.save's RuntimeError, raised while handling the write's OSError
    assert disk_error(wrapped, tmp_path).why == "no space left"
    assert (
        disk_error(RuntimeError("unexpected pos"), tmp_path, needed=2**62) is not None
    )  # less room than needed
    assert disk_error(RuntimeError("a bug"), tmp_path, needed=1) is None
    assert room_warning(tmp_path, 1) is None and "MiB free" in room_warning(tmp_path, 2**62)
    one_line = str(disk_error(enospc, tmp_path))
    assert "\n" not in one_line and "MiB free" in one_line and "run the same command again" in one_line


def test_a_checkpoint_save_on_a_full_disk_fails_cleanly_and_resumes_exactly(tmp_path, small_disk):
    cfg = load_run_config(config(tmp_path))
    reference = train(cfg, tmp_path / "reference")
    assert reference["state"] == "done"

    run_dir = small_disk / "run"
    polls = {"n": 0}

    def fill_after_first_checkpoint() -> bool:  # polled after every step that saves nothing
        polls["n"] += 1
        if polls["n"] == 5:  # step 5: checkpoint 4 is written; the save at step 8 will not fit
            fill(small_disk, leave=256 * 1024)
        return False

    with pytest.raises(DiskFull) as raised:
        train(cfg, run_dir, should_stop=fill_after_first_checkpoint)
    assert "MiB free" in str(raised.value) and str(small_disk) in str(raised.value)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith("disk full (no space left)")
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000004"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # no half save

    (small_disk / "filler").unlink()
    assert train(cfg, run_dir)["state"] == "done"
    assert losses(run_dir) == losses(tmp_path / "reference")  # resumed from step 4, bitwise equal
    modes = {oct(p.stat().st_mode & 0o777) for p in (run_dir / "checkpoints").rglob("*") if p.is_file()}
    assert modes == {"0o644"}


def test_ablate_train_on_a_full_disk_says_so_in_one_line(tmp_path, small_disk):
    path = config(tmp_path)
    fill(small_disk, leave=512 * 1024)  # room for the run's small files, not for a checkpoint
    done = subprocess.run(
        [sys.executable, "-m", "ablate.cli", "train", str(path), "--run-dir", str(small_disk / "run")],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("ablate: error:")]
    assert len(errors) == 1 and "disk full" in errors[0] and "MiB free" in errors[0]
    assert "Traceback" not in done.stderr
    assert json.loads((small_disk / "run" / "status.json").read_text())["state"] == "failed"


@pytest.mark.slow
def test_a_sweep_job_on_a_full_disk_is_failed_with_the_reason_and_a_relaunch_resumes_it(
    tmp_path, small_disk, slurm_cluster, capsys
):
    """The same fault under a SLURM sweep job: ``sweep status`` names the full disk, and once space is freed a
    plain relaunch (no --retry-failed: the disk's state, not the run's) resumes it to the reference losses."""
    from ablate.cli import main
    from sweeps.launch import launch, wait

    run = yaml.safe_load(config(tmp_path).read_text())
    run["train"] = {**run["train"], "steps": 24, "checkpoint_every": 8}
    sweep = {
        "name": "full",
        "base": {k: run[k] for k in ("model", "data", "train", "optim", "schedule")},
        "arms": {"1:7": {"model": {"preset": "tiny-1to7"}}},
        "resources": {"cpus_per_task": 1, "time": "00:10:00"},
    }
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    root = small_disk / "runs"
    filler = fill(small_disk, leave=1024 * 1024)  # the run's small files fit, its first checkpoint does not

    launch(path, executor="slurm", root=root)
    (state,) = wait(path, root=root, poll_s=1, timeout_s=180)
    assert state.state == "failed" and state.detail.startswith("disk full (no space left)"), state.as_dict()
    capsys.readouterr()
    assert main(["sweep", "status", str(path), "--root", str(root)]) == 0
    assert "disk full" in capsys.readouterr().out

    filler.unlink()
    launch(path, executor="slurm", root=root)
    (state,) = wait(path, root=root, poll_s=1, timeout_s=180)
    assert state.state == "done", state.as_dict()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job ran (cpus_per_task: 1)
    try:
        train(load_run_config(state.dir.config), tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)
    assert losses(state.dir.root) == losses(tmp_path / "reference")
