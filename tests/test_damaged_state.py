"""Damaged state files (truncated, invalid, edited by hand): each is named in one line with what to do,
the run is shown as ``damaged`` and every other run normally; resume and evaluation fall back to the
newest checkpoint that verifies against the checksums recorded at save time; a checkpoint trained under
another config than the run's config.yaml is refused with both run ids and the differing keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_sweep_launch import sweep_file as tiny_sweep_file

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.data.packs import prepare
from harness.training.config import config_hash, resolve_run_config
from harness.training.loading import load_run
from harness.training.record import prepare_run_dir
from harness.training.rundir import DamagedFile, RunDir, read_jsonl
from harness.training.trainer import train
from sweeps.config import expand_sweep, load_sweep
from sweeps.launch import launch
from sweeps.lifecycle import run_dir, run_states
from sweeps.scheduler import write_job

pytestmark = pytest.mark.usefixtures("one_thread")


def sweep_file(tmp_path: Path, arms: dict, steps: int = 20) -> Path:
    """The launcher tests' tiny sweep with checkpoints every 5 steps, every one kept."""
    path = tiny_sweep_file(tmp_path, name="dmg", arms=arms, steps=steps)
    data = yaml.safe_load(path.read_text())
    data["base"]["train"].update(checkpoint_every=5, keep_last=0)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def one_line(text: str, *fragments: str) -> str:
    (line,) = [ln for ln in text.splitlines() if all(f in ln for f in fragments)]
    return line


# ------------------------------------------------------------------------------------- status, launch
ARMS = {a: {"model": {"preset": f"tiny-{a}"}} for a in ("attention", "mamba", "1to3", "1to7")}


def test_damaged_state_files_are_named_and_the_other_runs_shown(tmp_path, capsys):
    """No training needed: four run directories as the launcher writes them, each with one state file
    damaged a different way, and a fifth sweep run that was never launched."""
    path = sweep_file(tmp_path, {**ARMS, "moe": {"model": {"preset": "tiny-1to7-moe"}}})
    root = tmp_path / "runs"
    sweep = load_sweep(path)
    runs = expand_sweep(sweep, str(path))
    dirs = [run_dir(sweep, run, root) for run in runs]
    for run, d in zip(runs[:4], dirs, strict=False):
        prepare_run_dir(run.config, d)
        write_job(d, "debug", "1", root / "dmg" / ".submitit" / "%j", 0.0)
        d.set_status(state="interrupted", step=5, total_steps=20)
    truncate(dirs[0].status_file, 20)  # attention: status.json
    truncate(dirs[1].root / "job.json", 30)  # mamba: job.json
    dirs[2].config.write_text(dirs[2].config.read_text() + "model: {}\n")  # 1to3: a duplicate key
    dirs[3].config.write_text(dirs[3].config.read_text().replace("lr: 0.003", "lr: 0.004"))  # 1to7: edited

    assert main(["sweep", "status", str(path), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ARMS}
    # A damaged status.json is rebuilt from the directory (no checkpoint, no finish: step 0, and its job
    # is gone); the three other files cannot be, and their runs are shown damaged.
    assert [rows[a].split()[3] for a in ARMS] == ["interrupted"] + ["damaged"] * 3
    assert "not launched" in one_line(out, "moe seed=0")
    one_line(out, "status.json was damaged; rebuilt from the run directory (pending, step 0)")
    one_line(out, "job.json is damaged", "delete the file and relaunch")
    one_line(out, "config.yaml is damaged", "duplicate key 'model'", "delete the run directory")
    stored = resolve_run_config(yaml.safe_load(dirs[3].config.read_text()))
    one_line(out, "config.yaml is damaged", config_hash(stored), runs[3].run_id, "optim.lr: 0.004 -> 0.003")

    assert main(["sweep", "status", str(path), "--root", str(root), "--json"]) == 0
    states = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in states] == ["interrupted"] + ["damaged"] * 3 + ["not launched"]
    assert [len(s["damaged"]) for s in states[:4]] == [0, 1, 1, 1]

    # launch decides by the same states: the run whose status.json is damaged resumes (its job.json says
    # no job is alive), the other three are left alone and named, the unlaunched one is submitted.
    report = launch(path, executor="local", root=root, dry_run=True)
    assert [s.run.arm for s in report.submitted] == ["attention", "moe"]
    assert [s.run.arm for s, _ in report.skipped] == ["mamba", "1to3", "1to7"]
    assert all("is damaged" in why for _, why in report.skipped)


def test_a_finished_runs_damaged_status_is_rebuilt_not_resubmitted(tmp_path, capsys):
    """A done run whose status.json was truncated: the relaunch says what it found (done at step 20,
    status rebuilt), submits nothing, and writes back a status with the loss, name and config hash."""
    path = sweep_file(tmp_path, {"mamba": ARMS["mamba"]})
    root = tmp_path / "runs"
    assert main(["sweep", "launch", str(path), "--root", str(root), "--executor", "debug"]) == 0
    (d,) = [s.dir for s in run_states(load_sweep(path), expand_sweep(load_sweep(path), str(path)), root)]
    before = d.status()
    truncate(d.status_file, 20)
    capsys.readouterr()
    assert main(["sweep", "launch", str(path), "--root", str(root), "--executor", "debug"]) == 0
    out = capsys.readouterr().out
    one_line(out, "skip", "done at step 20, status rebuilt")
    assert "nothing to submit" in out and "resume" not in out
    after = d.status()
    assert after["state"] == "done" and after["step"] == 20 and after["rebuilt"] is True
    for key in ("loss", "name", "config_hash", "tokens"):
        assert after[key] == before[key], key


def test_a_damaged_jsonl_line_is_named_and_skipped(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n[3]\n{"step": 4, "loss": 1.0}\n{"step": 5')
    assert [r["step"] for r in read_jsonl(path)] == [1, 4]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"{path}: line" in line and "is damaged" in line for line in err)
    assert "line 2" in err[0] and "line 3" in err[1]  # line 5, torn (no newline yet: a live writer), is not


def test_damaged_launch_intent_is_one_line(tmp_path, capsys):
    path = sweep_file(tmp_path, {"mamba": ARMS["mamba"]})
    folder = tmp_path / "runs" / "dmg"
    folder.mkdir(parents=True)
    (folder / ".launch-intent.json").write_text('{"started_at": 1.0, "exec')
    assert main(["sweep", "launch", str(path), "--root", str(tmp_path / "runs"), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".launch-intent.json is damaged" in err and "squeue" in err


# ------------------------------------------------------------------------------------------ evaluation
@pytest.fixture
def run_copy(hybrid_run, tmp_path):  # noqa: F811
    """A private copy of the session's trained run, with a second, earlier checkpoint (a copy of the final
    one: its recorded checksums still hold) to fall back to."""
    run = Path(shutil.copytree(hybrid_run, tmp_path / "run"))
    final = run / "checkpoints" / "step_00000060"
    earlier = shutil.copytree(final, run / "checkpoints" / "step_00000030")
    meta = json.loads((earlier / "meta.json").read_text())
    (earlier / "meta.json").write_text(json.dumps({**meta, "step": 30}))
    return run


def test_eval_falls_back_past_a_damaged_checkpoint(run_copy, capsys):
    final = run_copy / "checkpoints" / "step_00000060"
    truncate(final / "model.safetensors", 1000)
    loaded = load_run(run_copy, device="cpu")
    assert loaded.step == 30 and loaded.checkpoint == "step_00000030"
    err = capsys.readouterr().err
    one_line(err, str(final), "model.safetensors has 1,000 bytes", "truncated?", "evaluating step_00000030")
    with pytest.raises(DamagedFile, match="step_00000060 is damaged.*evaluate another step"):
        load_run(run_copy, step=60, device="cpu")
    assert main(["eval", str(run_copy), "--suite", "induction", "--step", "60"]) == 2
    assert "step_00000060 is damaged" in capsys.readouterr().err

    (final / "meta.json").write_text('{"step": 6')  # now its meta too: still skipped, still named
    assert load_run(run_copy, device="cpu").step == 30
    assert "meta.json is not valid JSON" in capsys.readouterr().err
    earlier = run_copy / "checkpoints" / "step_00000030" / "state.pt"
    data = earlier.read_bytes()
    earlier.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, another byte: the checksum says
    with pytest.raises(ConfigError, match="has no checkpoint that verifies"):
        load_run(run_copy, device="cpu")
    assert "state.pt does not match the checksum" in capsys.readouterr().err


def test_eval_refuses_a_checkpoint_trained_under_another_config(run_copy, capsys):
    config = run_copy / "config.yaml"
    trained = config_hash(resolve_run_config(yaml.safe_load(config.read_text())))
    config.write_text(config.read_text().replace("lr: 0.003", "lr: 0.01"))
    now = config_hash(resolve_run_config(yaml.safe_load(config.read_text())))
    with pytest.raises(ConfigError) as err:
        load_run(run_copy, device="cpu")
    msg = str(err.value)
    assert trained in msg and now in msg and "optim.lr: 0.003 -> 0.01" in msg and str(config) in msg
    assert main(["eval", str(run_copy), "--suite", "induction"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and trained in line and now in line

    config.write_text("model: [unclosed\n")
    assert main(["eval", str(run_copy), "--suite", "induction"]) == 2
    line = capsys.readouterr().err.strip()
    assert "config.yaml is damaged (invalid YAML at line 2" in line and "delete the run directory" in line


# -------------------------------------------------------------------------------------------- acceptance
def test_damaged_sweep_status_and_resume_from_the_previous_good_checkpoint(tmp_path, capsys):
    """A sweep with one damaged job.json and one truncated checkpoint: `status` lists every run, the damaged
    one named; `launch` resumes the other from its previous good checkpoint, and its losses equal (==)
    those of the same run uninterrupted."""
    prepare(packs=["web"])
    path = sweep_file(tmp_path, {"mamba": ARMS["mamba"], "1to7": ARMS["1to7"]})
    root = tmp_path / "runs"
    assert main(["sweep", "launch", str(path), "--root", str(root), "--executor", "debug"]) == 0
    sweep = load_sweep(path)
    mamba, hybrid = run_states(sweep, expand_sweep(sweep), root)
    assert [mamba.state, hybrid.state] == ["done", "done"]

    def losses(d: RunDir) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in read_jsonl(d.metrics) if "loss" in r]

    uninterrupted = losses(hybrid.dir)
    assert len(uninterrupted) == 20
    truncate(mamba.dir.root / "job.json", 40)
    final = hybrid.dir.checkpoints / "step_00000020"
    truncate(final / "model.safetensors", 4096)
    capsys.readouterr()

    assert main(["sweep", "status", str(path), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "damaged" in one_line(out, "mamba seed=0") and "interrupted" in one_line(out, "1to7 seed=0")
    one_line(out, str(mamba.dir.root / "job.json"), "is damaged", "delete the file and relaunch")
    one_line(out, str(final), "is damaged", "a relaunch resumes from the newest good checkpoint")

    assert main(["sweep", "launch", str(path), "--root", str(root), "--executor", "debug"]) == 0
    out, err = capsys.readouterr()
    assert "job.json is damaged" in one_line(out, "skip", "mamba seed=0")
    one_line(out, "resume", "1to7 seed=0")
    one_line(err, str(final), "is damaged", "skipped, resuming from step_00000015")
    resumes = [e for e in read_jsonl(hybrid.dir.events) if e["event"] == "resume"]
    assert resumes[-1]["checkpoint"] == "step_00000015"
    assert losses(hybrid.dir) == uninterrupted  # bit-identical, every step
    mamba, hybrid = run_states(sweep, expand_sweep(sweep), root)
    assert [mamba.state, hybrid.state] == ["damaged", "done"]
    assert not list(hybrid.dir.checkpoints.glob(".*"))  # the damaged checkpoint was set aside, then removed

    # Resume refuses a checkpoint trained under another config (config.yaml edited to match a new one).
    edited = yaml.safe_load(hybrid.dir.config.read_text())
    edited["optim"]["lr"] = 0.002
    hybrid.dir.config.write_text(yaml.safe_dump(edited, sort_keys=False))
    cfg = resolve_run_config(edited)
    with pytest.raises(ConfigError) as err:
        train(cfg, hybrid.dir.root)
    msg = str(err.value)
    assert hybrid.run.run_id in msg and config_hash(cfg) in msg and "optim.lr: 0.003 -> 0.002" in msg
