"""``ablate sweep launch / status / cancel`` against the real single-node SLURM, and with the local executor.

The runs are tiny (seq 64, a few dozen steps on the offline web pack) so a 4-arm job array finishes in
well under a minute on two cores. The requeue test gives a run a 1-minute time limit it cannot finish in:
SLURM signals it, the run checkpoints at a step boundary and is requeued (more than once), and its losses
must equal those of the same run trained without interruption, step for step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.data.packs import prepare
from harness.training.config import resolve_run_config
from harness.training.rundir import read_jsonl
from harness.training.trainer import train
from sweeps.config import expand_sweep, load_sweep
from sweeps.launch import cancel, launch, wait
from sweeps.lifecycle import run_states

ARMS = {
    "attention": {"model": {"preset": "tiny-attention"}},
    "mamba": {"model": {"preset": "tiny-mamba"}},
    "1:3": {"model": {"preset": "tiny-1to3"}},
    "1:7": {"model": {"preset": "tiny-1to7"}},
}


def sweep_file(tmp_path: Path, name: str = "tiny4", arms=None, steps: int = 20, **resources) -> Path:
    data = {
        "name": name,
        "base": {
            "model": {"preset": "tiny-attention"},
            "data": {
                "train": [{"name": "c4"}],
                "validation": [],
                "tokenizer": {"kind": "bpe", "vocab_size": 1024, "max_train_bytes": 1_000_000},
            },
            "train": {
                "seq_len": 64,
                "global_batch": 4,
                "micro_batch": 4,
                "steps": steps,
                "eval_every": 0,
                "eval_batches": 1,
                "checkpoint_every": 10,
                "log_every": 1,
            },
            "optim": {"lr": 3.0e-3},
        },
        "arms": ARMS if arms is None else arms,
        "resources": {"cpus_per_task": 1, "time": "00:10:00", **resources},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module", autouse=True)
def web_pack():
    prepare(packs=["web"])


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]


# ------------------------------------------------------------------------------------------ SLURM
def test_sweep_array_relaunch_and_edit(slurm_cluster, tmp_path):
    path = sweep_file(tmp_path)
    root = tmp_path / "runs"
    report = launch(path, executor="slurm", root=root)
    assert len(report.job_ids) == 4
    arrays = {job_id.split("_")[0] for job_id in report.job_ids}
    assert len(arrays) == 1, f"one job array expected, got {report.job_ids}"
    assert sorted(j.split("_")[1] for j in report.job_ids) == ["0", "1", "2", "3"]
    assert not list((root / "tiny4" / ".submitit").glob(".submission_file_*.sh"))  # submitit's scratch

    states = wait(path, root=root, poll_s=1, timeout_s=300)
    assert [s.state for s in states] == ["done"] * 4, [s.as_dict() for s in states]
    for s in states:
        assert s.dir.root.name == s.run.dir_name  # runs/<sweep>/<arm>-<run_id>
        assert s.dir.root.parent == root / "tiny4"
        steps = [step for step, _ in losses(s.dir.root)]
        assert steps == list(range(1, 21))
        assert (s.dir.root / "job.json").exists() and any((s.dir.root / "logs").iterdir())

    # Launching a finished sweep again submits nothing.
    again = launch(path, executor="slurm", root=root)
    assert again.job_ids == [] and len(again.skipped) == 4

    # Editing one arm submits only that arm, into a new run directory; the old result stays.
    data = yaml.safe_load(path.read_text())
    data["arms"]["mamba"]["optim"] = {"lr": 2.0e-3}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    edited = launch(path, executor="slurm", root=root)
    assert [s.run.arm for s in edited.submitted] == ["mamba"]
    old_mamba = next(s for s in states if s.run.arm == "mamba")
    assert edited.submitted[0].run.run_id != old_mamba.run.run_id
    assert old_mamba.dir.status()["state"] == "done"
    states = wait(path, root=root, poll_s=1, timeout_s=300)
    assert [s.state for s in states] == ["done"] * 4


def test_refused_submission_is_one_clear_error_and_the_relaunch_submits(
    slurm_cluster, tmp_path, monkeypatch, capsys
):
    """sbatch that cannot reach its controller (the real client, pointed at a port nothing listens on):
    one error line naming the sweep file and what to do, no traceback, no launch intent left behind, the
    run directories kept; the same launch against the live controller then submits every run."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    conf = slurm_cluster.conf.read_text()
    assert "SlurmctldPort=" in conf
    dead = tmp_path / "dead" / "slurm.conf"
    dead.parent.mkdir()
    lines = [f"SlurmctldPort={port}" if ln.startswith("SlurmctldPort=") else ln for ln in conf.splitlines()]
    dead.write_text("\n".join(lines) + "\n")
    path = sweep_file(tmp_path, name="refused", arms={"attention": ARMS["attention"]}, steps=2)
    root = tmp_path / "runs"
    monkeypatch.setenv("SLURM_CONF", str(dead))
    assert main(["sweep", "launch", str(path), "--executor", "slurm", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"ablate: error: {path}: the slurm scheduler refused the submission" in err
    assert "scripts/slurm/start.sh" in err and "--executor local" in err and "Traceback" not in err
    assert not (root / "refused" / ".launch-intent.json").exists()
    kept = [p.name for p in (root / "refused").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert [name.split("-")[0] for name in kept] == ["attention"]
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    report = launch(path, executor="slurm", root=root)
    assert len(report.job_ids) == 1
    assert [s.state for s in wait(path, root=root, poll_s=1, timeout_s=300)] == ["done"]


def _until(condition, timeout_s: float, what):
    """Poll ``condition()`` until it returns something truthy; fail with ``what()`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what()
        time.sleep(0.3)
    return value


@pytest.mark.slow
def test_fault_campaign_requeue_cancel_and_damaged_status(slurm_cluster, tmp_path, capsys):
    """One run through the faults SLURM deals out, each checked where it happens, and at the end: done, one
    metrics record per step, the losses of the same run trained without interruption.

    1. ``scontrol requeue`` (SIGTERM, then back to the queue): the job checkpoints the step it is at, the
       status says ``requeued`` while it waits, and the requeued job resumes from exactly that step.
    2. ``ablate sweep cancel`` (scancel's SIGTERM): the same, then ``cancelled``; the relaunch says
       ``resume from step N`` and redoes at most the step that was in flight.
    3. A truncated ``status.json`` once the run is done: the relaunch says ``done at step N, status rebuilt``
       and submits nothing."""
    import subprocess

    steps = 240
    path = sweep_file(tmp_path, name="faults", arms={"attention": ARMS["attention"]}, steps=steps)
    data = yaml.safe_load(path.read_text())
    data["base"]["train"]["checkpoint_every"] = 0  # every checkpoint is one a signal asked for
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    root = tmp_path / "runs"
    sweep = load_sweep(path)
    runs = expand_sweep(sweep)

    def state():
        return run_states(sweep, runs, root)[0]

    def events(kind):
        return [e for e in read_jsonl(state().dir.events) if e["event"] == kind]

    def logged():
        return max((r["step"] for r in read_jsonl(state().dir.metrics) if "loss" in r), default=0)

    def status_line() -> str:
        capsys.readouterr()
        assert main(["sweep", "status", str(path), "--root", str(root)]) == 0
        return capsys.readouterr().out

    launch(path, executor="slurm", root=root)
    job = state().job["job_id"]
    _until(lambda: state().state == "running" and logged() >= 10, 120, lambda: state().as_dict())
    assert job in status_line().split()

    # 1. scontrol requeue
    trained = logged()
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=30)
    (terminated,) = _until(lambda: events("terminated"), 60, lambda: read_jsonl(state().dir.events)[-3:])
    assert terminated["step"] >= trained  # the step it was at, not a periodic checkpoint
    _until(lambda: state().state == "requeued", 60, lambda: state().as_dict())
    assert "requeued" in status_line()
    (resume,) = _until(lambda: events("resume"), 180, lambda: state().as_dict())
    assert resume["step"] == terminated["step"]
    assert state().job["job_id"] == job  # the same job, requeued by SLURM

    # 2. ablate sweep cancel
    _until(lambda: logged() >= resume["step"] + 10, 120, lambda: state().as_dict())
    trained = logged()
    assert len(cancel(path, root=root)) == 1
    _until(lambda: state().state == "cancelled", 60, lambda: state().as_dict())
    assert "cancelled" in status_line()
    second = _until(lambda: events("terminated")[1:], 60, lambda: read_jsonl(state().dir.events)[-3:])[0]
    assert second["step"] >= trained
    capsys.readouterr()
    report = launch(path, executor="slurm", root=root)
    assert f"resume from step {second['step']}" in capsys.readouterr().out
    assert [s.step for s in report.submitted] == [second["step"]]
    (final,) = wait(path, root=root, poll_s=1, timeout_s=300)
    assert final.state == "done", final.as_dict()
    assert [e["step"] for e in events("resume")] == [terminated["step"], second["step"]]

    # every step once, and the same losses as without any fault
    assert losses(final.dir.root) == _reference_losses(final, tmp_path)
    assert [step for step, _ in losses(final.dir.root)] == list(range(1, steps + 1))

    # 3. a damaged status.json on a finished run
    final.dir.status_file.write_text('{"state": "do')
    capsys.readouterr()
    assert launch(path, executor="slurm", root=root).job_ids == []
    assert f"done at step {steps}, status rebuilt" in capsys.readouterr().out
    assert "done" in status_line()


def test_broken_sweeps_fail_before_writing(tmp_path, capsys):
    broken = {
        "unknown key": ({"resorces": {}}, "resorces"),
        "misspelled arm field": ({"arms": {"a": {"model": {"preset": "tiny-1to7", "d_fff": 3}}}}, "d_fff"),
        "bad pattern": ({"arms": {"a": {"model": {"preset": "tiny-1to7", "pattern": "*-Q-"}}}}, "pattern"),
        "K > n": ({"arms": {"a": {"model": {"preset": "tiny-1to7-moe", "moe": {"top_k": 17}}}}}, "top_k"),
        "negative steps": ({"base": {"train": {"steps": -5}}}, "steps"),
        "missing preset": ({"arms": {"a": {"model": {"preset": "tiny-2to9"}}}}, "preset"),
        "wrong type": ({"base": {"train": {"seq_len": "long"}}}, "seq_len"),
    }
    for case, (patch, key) in broken.items():
        path = sweep_file(tmp_path, name="broken", arms={"a": ARMS["1:7"]})
        data = yaml.safe_load(path.read_text())
        for section, value in patch.items():
            if isinstance(data.get(section), dict):
                for k, v in value.items():
                    data[section][k] = {**data[section].get(k, {}), **v} if isinstance(v, dict) else v
            else:
                data[section] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        root = tmp_path / f"runs-{case.replace(' ', '-')}"
        with pytest.raises(ConfigError) as err:
            launch(path, executor="local", root=root)
        assert key in str(err.value) and str(path) in str(err.value), (case, str(err.value))
        assert not root.exists(), case
        assert main(["sweep", "launch", str(path), "--executor", "local", "--root", str(root)]) == 2
        assert key in capsys.readouterr().err
        assert not root.exists(), case


# ------------------------------------------------------------------------------------------ local
def test_local_executor_runs_the_same_sweep(tmp_path, capsys):
    """array_parallelism 1: the local jobs wait in line and train one after another."""
    arms = {"attention": ARMS["attention"], "1:7": ARMS["1:7"]}
    path = sweep_file(tmp_path, arms=arms, array_parallelism=1)
    root = tmp_path / "runs"
    sweep = load_sweep(path)
    launch(path, executor="local", root=root)
    seen = set()  # while one trains, the other waits in line: pending, not running
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = run_states(sweep, expand_sweep(sweep), root)
        now = tuple(sorted((s.state, s.detail) for s in states))
        seen.add(now)
        if [state for state, _ in now] == ["done", "done"]:
            break
        time.sleep(0.5)
    assert (("pending", "waiting for a local slot"), ("running", "")) in seen, seen
    assert main(["sweep", "launch", str(path), "--executor", "local", "--root", str(root), "--wait"]) == 0
    out = capsys.readouterr().out
    assert out.count("done") >= 2
    assert [s.state for s in states] == ["done", "done"]
    assert all(len(losses(s.dir.root)) == 20 for s in states)
    spans = []
    for s in states:
        times = {e["event"]: e["time"] for e in read_jsonl(s.dir.events)}
        spans.append((times["job_start"], times["finish"]))
    first, second = sorted(spans)
    assert first[1] <= second[0]  # the second trained only once the first had finished
    assert not list((root / ".local-slots" / "queue").iterdir())  # nobody left in line
    assert launch(path, executor="local", root=root).job_ids == []


def test_two_tasks_train_with_torch_distributed_from_slurm(slurm_cluster, tmp_path):
    """ntasks_per_node=2: each SLURM task joins torch.distributed (gloo) through submitit's
    TorchDistributedEnvironment; the losses match one process with the same global batch."""
    path = sweep_file(tmp_path, name="ddp", arms={"1:7": ARMS["1:7"]}, steps=6, tasks_per_node=2)
    data = yaml.safe_load(path.read_text())
    data["base"]["train"]["micro_batch"] = 2  # global batch 4 = 2 per rank x 2 ranks
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    root = tmp_path / "runs"
    launch(path, executor="slurm", root=root)
    (state,) = wait(path, root=root, poll_s=1, timeout_s=300)
    assert state.state == "done", state.as_dict()
    start = next(e for e in read_jsonl(state.dir.events) if e["event"] == "start")
    assert start["world_size"] == 2

    single = yaml.safe_load(state.dir.config.read_text())
    single["train"]["micro_batch"] = 4
    reference = tmp_path / "single"
    train(resolve_run_config(single), reference)
    for (step, a), (step_ref, b) in zip(losses(state.dir.root), losses(reference), strict=True):
        assert step == step_ref and a == pytest.approx(b, abs=1e-4)


def test_debug_executor_runs_in_process_and_status_json(tmp_path, capsys):
    path = sweep_file(tmp_path, name="dbg", arms={"mamba": ARMS["mamba"]}, steps=5)
    root = tmp_path / "runs"
    report = launch(path, executor="debug", root=root)
    assert len(report.job_ids) == 1
    capsys.readouterr()
    assert main(["sweep", "status", str(path), "--root", str(root), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "done" and row["step"] == 5 and row["arm"] == "mamba"
    assert row["run_dir"] == str(root / "dbg" / report.submitted[0].run.dir_name)


def test_evals_run_in_the_job_after_training(slurm_cluster, tmp_path):
    path = sweep_file(tmp_path, name="withevals", arms={"1:7": ARMS["1:7"]}, steps=10)
    data = yaml.safe_load(path.read_text())
    data["evals"] = ["perplexity", "induction", "attention"]
    data["eval_options"] = {
        "perplexity": {"limit": 3, "corpora": ["c4"], "max_doc_bytes": 4000},
        "induction": {"limit": 4, "natural_corpus": None},
        "attention": {"limit": 2, "save_maps": False},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    root = tmp_path / "runs"
    launch(path, executor="slurm", root=root)
    (state,) = wait(path, root=root, poll_s=1, timeout_s=400)
    assert state.state == "done", state.as_dict()
    for suite in data["evals"]:
        result = json.loads((state.dir.evals / f"{suite}.json").read_text())
        assert result["step"] == 10 and result["config_hash"] == state.run.run_id
    perplexity = json.loads((state.dir.evals / "perplexity.json").read_text())
    assert perplexity["limit"] == 3
    assert launch(path, executor="slurm", root=root).job_ids == []


def test_misspelled_eval_option_fails_at_launch(tmp_path):
    path = sweep_file(tmp_path, name="badopt", arms={"1:7": ARMS["1:7"]})
    data = yaml.safe_load(path.read_text())
    data["evals"] = ["icl"]
    data["eval_options"] = {"icl": {"shotz": 4}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match="shotz.*Did you mean 'shots'") as err:
        launch(path, executor="local", root=tmp_path / "runs")
    assert err.value.key == "eval_options.icl"
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ run record, eval plan
def test_run_record_and_edited_eval_plan(tmp_path, capsys):
    """run.json holds the arm verbatim (`1:7+moe`), the sweep, grid point, seed and plan; editing one eval
    option after the runs finished re-runs exactly that suite for every run, and nothing else."""
    arms = {"1:7+moe": {"model": {"preset": "tiny-1to7-moe"}}, "mamba": ARMS["mamba"]}
    path = sweep_file(tmp_path, name="plan", arms=arms, steps=4)
    data = yaml.safe_load(path.read_text())
    data["evals"] = ["perplexity", "induction"]
    data["eval_options"] = {
        "perplexity": {"limit": 2, "corpora": ["c4"], "max_doc_bytes": 2000},
        "induction": {"limit": 2, "natural_corpus": None},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    root = tmp_path / "runs"
    first = launch(path, executor="debug", root=root)
    assert len(first.job_ids) == 2
    sweep = load_sweep(path)
    states = run_states(sweep, expand_sweep(sweep), root)
    assert [s.state for s in states] == ["done", "done"]
    record = json.loads((states[0].dir.root / "run.json").read_text())
    assert record["arm"] == "1:7+moe" and record["sweep"]["name"] == "plan" and record["seed"] == 0
    assert record["run_id"] == states[0].run.run_id and record["grid_point"] == {}
    assert record["created_by"] == "ablate sweep launch" and record["model"]["pattern"].count("E") == 4
    assert list(record["eval_plan"]["suites"]) == ["perplexity", "induction"]
    assert states[0].dir.root.name == f"1to7+moe-{record['run_id']}"
    # The trainer recorded the software stack it ran under, in run.json and in its start event.
    stack = record["environment"]
    assert stack["packages"]["torch"] == torch.__version__ and stack["packages"]["submitit"]
    assert len(stack["commit"]) == 40 and stack["python"]
    start = next(e for e in read_jsonl(states[0].dir.events) if e["event"] == "start")
    assert start["environment"] == stack
    before = {s.run.arm: _snapshot(s.dir.root) for s in states}

    data["eval_options"]["induction"]["seed"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    sweep = load_sweep(path)
    states = run_states(sweep, expand_sweep(sweep), root)
    assert [s.run.run_id for s in states] == [s.run.run_id for s in first.submitted]  # same runs
    assert [s.evals_missing for s in states] == [{"induction": "options changed: seed 0 -> 1"}] * 2
    capsys.readouterr()
    assert main(["sweep", "status", str(path), "--root", str(root)]) == 0
    assert "induction: options changed: seed 0 -> 1" in capsys.readouterr().out

    again = launch(path, executor="debug", root=root)
    assert len(again.job_ids) == 2
    for s in run_states(sweep, expand_sweep(sweep), root):
        assert s.state == "done"
        after = _snapshot(s.dir.root)
        old = before[s.run.arm]
        assert after["evals/perplexity.json"] == old["evals/perplexity.json"]  # not run again
        assert after["evals/induction.json"] != old["evals/induction.json"]
        assert json.loads(after["evals/induction.json"])["spec"]["seed"] == 1
        for name in ("metrics.jsonl", "config.yaml", "checkpoints"):
            assert after[name] == old[name]  # training was not repeated
        events = [e["event"] for e in read_jsonl(s.dir.events)]
        assert events.count("start") == 1 and "resume" not in events
        assert json.loads(after["run.json"])["environment"]["packages"]["torch"] == torch.__version__
        assert (
            json.loads((s.dir.root / "run.json").read_text())["eval_plan"]["suites"]["induction"]["options"][
                "seed"
            ]
            == 1
        )
    assert launch(path, executor="debug", root=root).job_ids == []


def _snapshot(run_dir: Path) -> dict[str, bytes | list[str]]:
    files = {
        name: (run_dir / name).read_bytes()
        for name in (
            "evals/perplexity.json",
            "evals/induction.json",
            "metrics.jsonl",
            "config.yaml",
            "run.json",
        )
    }
    files["checkpoints"] = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    return files


# ------------------------------------------------------------------------------ killed launcher
_REFERENCE: dict[str, list[tuple[int, float]]] = {}


def _reference_losses(state, tmp_path: Path) -> list[tuple[int, float]]:
    """Losses of the same run trained without any interruption, in process (once per training config and
    session: the sweeps of these tests differ in name only, and the name does not change the losses)."""
    config = yaml.safe_load(state.dir.config.read_text())
    key = json.dumps({k: v for k, v in config.items() if k != "name"}, sort_keys=True)
    if key not in _REFERENCE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the job ran (cpus_per_task: 1)
        try:
            ref = tmp_path / f"reference-{state.run.arm.replace(':', '')}"
            train(resolve_run_config(config), ref)
        finally:
            torch.set_num_threads(threads)
        _REFERENCE[key] = losses(ref)
    return _REFERENCE[key]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_submit", "after_submit", "mid_record"])
def test_launcher_killed_while_submitting(slurm_cluster, tmp_path, point):
    """SIGKILL the launcher at each point of its submit path, then relaunch: no run gets a second job,
    every run ends done with exactly one metrics record per step and the losses of an uninterrupted run,
    and no submitit file is left that no run records."""
    import os
    import signal
    import subprocess
    import sys

    path = sweep_file(
        tmp_path, name=f"kill-{point.replace('_', '-')}", arms={k: ARMS[k] for k in ("attention", "1:7")}
    )
    root = tmp_path / "runs"
    killed = subprocess.run(
        [sys.executable, "-m", "ablate.cli", "sweep", "launch", str(path), "--executor", "slurm"]
        + ["--root", str(root)],
        env={**os.environ, "ABLATE_TEST_KILL_LAUNCH": point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = root / path.stem
    assert (folder / ".launch-intent.json").exists()

    report = launch(path, executor="slurm", root=root)
    assert not (folder / ".launch-intent.json").exists()
    if point == "before_submit":  # nothing reached SLURM: both runs are submitted now
        assert len(report.job_ids) == 2 and not any("recorded job" in r for r in report.reconciled)
    else:  # both jobs reached SLURM: recorded, and not submitted again
        assert report.job_ids == [] and len(report.skipped) == 2
        assert sum("recorded job" in r for r in report.reconciled) == (2 if point == "after_submit" else 1)
    states = wait(path, root=root, poll_s=1, timeout_s=300)
    assert [s.state for s in states] == ["done", "done"], [s.as_dict() for s in states]
    jobs = set()
    for s in states:
        record = json.loads((s.dir.root / "job.json").read_text())
        jobs |= {record["job_id"], *(h["job_id"] for h in record["history"])}
        assert losses(s.dir.root) == _reference_losses(s, tmp_path)  # one record per step, same losses
        assert [e["event"] for e in read_jsonl(s.dir.events)].count("start") == 1
    filed = {p.name for p in (folder / ".submitit").iterdir() if p.is_dir() and "_" in p.name}
    assert filed == jobs  # every array task folder belongs to a recorded job, and only those remain
    arrays = {j.split("_")[0] for j in jobs}
    assert {p.name for p in (folder / ".submitit").iterdir() if p.is_dir() and "_" not in p.name} <= arrays
    assert launch(path, executor="slurm", root=root).job_ids == []


@pytest.mark.parametrize("started", [False, True], ids=["pending", "started"])
def test_reconcile_cancels_jobs_whose_submission_was_never_filed(slurm_cluster, tmp_path, started):
    """A launcher killed between sbatch and filing the submissions leaves an array that would fail without
    running (or, started, fill sacct with failures): the next launch cancels it, waiting or started, and
    records nothing for it."""
    import subprocess

    path = sweep_file(tmp_path, name="unfiled", arms={"attention": ARMS["attention"]})
    sweep = load_sweep(path)
    folder = tmp_path / "runs" / sweep.name
    folder.mkdir(parents=True)
    (folder / ".launch-intent.json").write_text(json.dumps({"started_at": time.time(), "executor": "slurm"}))
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--job-name",
            sweep.name,
            "--array=0-1",
            f"--output={tmp_path}/slurm-%A_%a.out",  # not the default: slurm-*.out in the working directory
            *([] if started else ["--begin=now+120"]),
            "--wrap",
            "sleep 300" if started else "true",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    array = out.strip().split(";")[0]
    if started:
        _until(
            lambda: (
                "R"
                in subprocess.run(
                    ["squeue", "-h", "-r", "-o", "%t", "-j", array], capture_output=True, text=True
                ).stdout.split()
            ),
            60,
            lambda: f"array {array} did not start",
        )
    from sweeps.launch import reconcile

    done = reconcile(sweep, folder, echo=lambda s: None)
    assert any(f"cancelled jobs {array}" in line for line in done), done
    deadline = time.monotonic() + 30
    while True:
        state = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "State", "-j", array], capture_output=True, text=True
        )
        if state.stdout.strip().startswith("CANCELLED"):
            break
        assert time.monotonic() < deadline, state.stdout
        time.sleep(0.5)
    assert not (folder / ".launch-intent.json").exists()
