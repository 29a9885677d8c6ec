"""What a run reports while it trains (harness/training/tracking.py): the plain progress line on stdout,
TensorBoard event files and Weights & Biases offline runs that mirror metrics.jsonl, and a resumed run that
continues the same W&B run. The last test does it all in a sweep job on the real SLURM, reading the job's
.out file while the job runs, until its time limit requeues it and the requeued job resumes."""

from __future__ import annotations

import re
import subprocess
import time
from itertools import pairwise

import pytest
import yaml
from test_sweep_launch import sweep_file
from test_training import corpus, write_config  # noqa: F401  (a module fixture and its config)
from tracking_readers import tensorboard_scalars, wandb_offline_runs

from harness.config_errors import ConfigError
from harness.data.packs import prepare
from harness.training.config import load_run_config
from harness.training.rundir import read_jsonl
from harness.training.tracking import format_line
from harness.training.trainer import train
from sweeps.launch import launch, wait

TRACKING = ["tracking.tensorboard=true", "tracking.wandb=true", "tracking.wandb_mode=offline"]
LINE = re.compile(r"step (\d+)/(\d+) \| tokens \S+ \| loss (\d+\.\d{4})")


def with_tracking(path, **tracking):
    """The run config file ``path`` with a tracking section."""
    data = yaml.safe_load(path.read_text())
    data["tracking"] = tracking
    path.write_text(yaml.safe_dump(data))
    return path


def train_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r}


def test_format_line_leaves_out_what_is_unknown():
    line = format_line("run", 40, 150, 81920, 4.21337, val_loss=4.3, lr=2.87e-3, grad_norm=0.6421,
                       tokens_per_s=25123.0, mfu=0.31, mem_gib=2.34, eta_s=41, now=0)  # fmt: skip
    assert line.endswith(
        "run step 40/150 | tokens 81.9K | loss 4.2134 | val 4.3000 | lr 2.87e-03 | grad norm 0.642 | "
        "25.1K tok/s | MFU 31.0% | mem 2.34 GiB | ETA 0:00:41"
    )
    assert format_line("run", 1, 10, 256, 8.3, now=0).endswith("run step 1/10 | tokens 256 | loss 8.3000")


def test_lines_tensorboard_and_wandb_mirror_metrics_across_a_resume(tmp_path, corpus, capsys):  # noqa: F811
    path = write_config(tmp_path, corpus, steps=12, eval_every=6, eval_batches=1)
    tracking = {"print_every": 5, "tensorboard": True, "wandb": True, "wandb_mode": "offline"}
    cfg = load_run_config(with_tracking(path, **tracking))
    run_dir = tmp_path / "run"
    polls = iter(range(100))
    first = train(cfg, run_dir, should_stop=lambda: next(polls) == 6)  # stops after step 7
    assert first["state"] == "interrupted" and first["step"] == 7
    out1 = capsys.readouterr().out
    assert train(cfg, run_dir)["state"] == "done"
    out2 = capsys.readouterr().out

    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, 13))
    # progress lines: the first step of each session, every 5th step, held-out losses, the last step
    for out, steps in ((out1, [1, 5, 6]), (out2, [8, 10, 12])):
        lines = [m for m in map(LINE.search, out.splitlines()) if m]
        assert [int(m.group(1)) for m in lines] == steps, out
        assert all(float(m.group(3)) == round(losses[int(m.group(1))], 4) for m in lines)
    assert (
        "starts: 12 steps" in out1
        and "resumes at step 7" in out2
        and "tracking to TensorBoard and W&B" in out2
    )
    assert re.search(r"step 6/12 .*\| val \d\.\d{4} \|", out1) and re.search(r"step 12/12 .*\| val ", out2)

    # TensorBoard: the metrics.jsonl values, read by tensorboard's own reader
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 13))
    assert all(abs(v - losses[s]) < 1e-5 for s, v in scalars["train/loss"])
    vals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "val_loss" in r]
    assert [s for s, _ in scalars["val/loss"]] == [6, 12] == [r["step"] for r in vals]
    assert {"train/lr", "train/grad_norm", "perf/tokens_per_s", "moe/expert_load_max_over_mean"} <= set(
        scalars
    )

    # W&B: two offline sessions of one W&B run, the second continuing where the first stopped
    sessions = wandb_offline_runs(run_dir)
    assert len(sessions) == 2 and sessions[0]["id"] == sessions[1]["id"]
    assert sessions[0]["project"] == "jamba-ablate" and sessions[0]["name"] == "tiny-test"
    history = [row for s in sessions for row in s["history"]]
    logged = {row["_step"]: row["train/loss"] for row in history if "train/loss" in row}
    assert sorted(logged) == list(range(1, 13)) and all(abs(logged[s] - losses[s]) < 1e-9 for s in logged)
    assert max(r["_step"] for r in sessions[0]["history"]) == 7
    assert sessions[0]["config"]["train"]["steps"] == 12 and sessions[0]["config"]["run"]["run_id"]


def test_missing_integration_fails_before_training(tmp_path, corpus, monkeypatch):  # noqa: F811
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    cfg = load_run_config(with_tracking(write_config(tmp_path, corpus), wandb=True))
    with pytest.raises(ConfigError, match=r"tracking.wandb.*pip install 'jamba-ablate\[tracking\]'"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ SLURM
@pytest.mark.slow
def test_time_limit_requeue_resumes_exactly_with_its_progress_and_tracking(slurm_cluster, tmp_path):
    """A sweep job on the real SLURM with a 2-minute limit and the pre-timeout signal 30 s before it. SLURM
    checks limits about once a minute and may signal up to 60 s early, so the signal comes 30-90 s after the
    start (a 1-minute limit could signal before Python has installed its handler, which kills the job). The
    run trains ~2 minutes, so it is signalled, checkpoints, requeues and resumes, with its .out (read while
    it trains), TensorBoard and W&B offline runs continuing across the requeue, and every loss equal to an
    uninterrupted run's, which trains meanwhile on one thread as the job does (the same reductions)."""
    import os
    import sys

    prepare(packs=["web"])
    steps = 2500
    arms = {"attention": {"model": {"preset": "tiny-attention"}}}
    path = sweep_file(tmp_path, name="requeue", arms=arms, steps=steps, time=2, signal_delay_s=30)
    data = yaml.safe_load(path.read_text())
    data["base"]["train"]["checkpoint_every"] = 0  # only the checkpoints written when SLURM signals
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    root = tmp_path / "runs"
    # Tracking comes from command-line overrides: run-time settings, so the run ids stay the file's.
    report = launch(path, executor="slurm", root=root, overrides=["tracking.print_every=50", *TRACKING])
    (state,) = report.submitted
    run_dir, job_id = state.dir.root, report.job_ids[0]
    reference = tmp_path / "reference"
    argv = [sys.executable, "-m", "ablate.cli", "train", str(run_dir / "config.yaml"), "--run-dir"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.Popen([*argv, str(reference)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    out_file = run_dir / "logs" / f"job-{job_id}.out"
    deadline = time.monotonic() + 180
    while True:  # the job's .out shows loss lines while it trains
        text = out_file.read_text() if out_file.exists() else ""
        lines = [m for m in map(LINE.search, text.splitlines()) if m]
        status = state.dir.status()
        if len(lines) >= 2:
            break
        assert time.monotonic() < deadline, (text[-2000:], status)
        time.sleep(0.2)
    assert status["state"] == "running" and status.get("step", 0) < steps, status
    assert int(lines[-1].group(2)) == steps

    (final,) = wait(path, root=root, poll_s=1, timeout_s=480)
    assert ref.wait(timeout=480) == 0, ref.stdout.read()[-3000:]
    assert final.state == "done", final.as_dict()
    events = read_jsonl(run_dir / "events.jsonl")
    stops = [e["step"] for e in events if e["event"] == "requeue"]
    assert stops, "the 2-minute limit should have forced at least one requeue"
    assert all(0 < s < steps for s in stops)
    assert [e["step"] for e in events if e["event"] == "resume"] == stops
    losses = train_losses(run_dir)
    assert losses == train_losses(reference)  # bit-identical, every step

    text = out_file.read_text()  # the requeued job appends to the same .out
    printed = [int(m.group(1)) for m in map(LINE.search, text.splitlines()) if m]
    assert printed[-1] == steps
    assert all(f"resumes at step {s}" in text and s + 1 in printed for s in stops)

    assert sorted(losses) == list(range(1, steps + 1))
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, steps + 1))
    assert all(abs(v - losses[s]) < 1e-5 for s, v in scalars["train/loss"])

    sessions = wandb_offline_runs(run_dir)  # one W&B run, continued by each requeued job
    assert len(sessions) == len(stops) + 1 and len({s["id"] for s in sessions}) == 1
    assert sessions[0]["project"] == "requeue" and sessions[0]["group"] == "requeue attention"
    assert sessions[0]["name"] == "attention seed=0" and sessions[0]["config"]["run"]["arm"] == "attention"
    logged = [[r["_step"] for r in s["history"] if "train/loss" in r] for s in sessions]
    bounds = [0, *stops, steps]
    assert logged == [list(range(a + 1, b + 1)) for a, b in pairwise(bounds)]
