"""Command-line overrides (harness/overrides.py) for ``ablate train`` and ``ablate sweep ...``: parsed as
YAML, validated by the same strict loader (a misspelled key names the nearest one and the override),
recorded in the resolved config, and changing the run id exactly as the same edit of the file would."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.overrides import parse_overrides, parse_value
from harness.training.config import config_hash, load_run_config, resolve_run_config
from sweeps.config import expand_sweep, load_sweep

RUN = {
    "name": "ov",
    "model": {"preset": "tiny-1to7"},
    "data": {"train": [{"name": "c4"}], "tokenizer": {"kind": "bpe", "vocab_size": 512}},
    "train": {"seq_len": 64, "global_batch": 4, "micro_batch": 4, "steps": 10},
}
SWEEP = {
    "name": "ov-sweep",
    "base": RUN | {"name": "unused"},
    "arms": {"attention": {"model": {"preset": "tiny-attention"}}, "1:7": {"train": {"steps": 20}}},
    "grid": {"optim.lr": [1.0e-3, 3.0e-3]},
    "resources": {"time": "00:10:00"},
}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_values_parse_as_yaml_with_numbers_and_times_kept_sensible():
    assert parse_value("200") == 200 and parse_value("3e-4") == 3e-4 and parse_value("1e6") == 1e6
    assert parse_value("true") is True and parse_value("null") is None and parse_value("") is None
    assert parse_value("[0, 1]") == [0, 1] and parse_value("{lr: 1e-3}") == {"lr": 1e-3}
    assert parse_value("[3e-4, 6e-4]") == [3e-4, 6e-4]
    assert parse_value("02:00:00") == "02:00:00"  # YAML 1.1 would read 7200
    assert parse_value("tiny-mamba") == "tiny-mamba"
    for bad in ("steps", "=3", "train..steps=3", "a b=1"):
        with pytest.raises(ConfigError, match="not key=value"):
            parse_overrides([bad])


def test_train_overrides_are_the_edit_they_stand_for(tmp_path):
    path = write(tmp_path / "run.yaml", RUN)
    base = load_run_config(path)
    overrides = ["train.steps=30", "optim.lr=6e-4", "model.d_ff=200", "data.train.0.name=books"]
    cfg = load_run_config(path, overrides)
    edited = copy.deepcopy(RUN)
    edited["train"]["steps"] = 30
    edited["optim"] = {"lr": 6e-4}
    edited["model"]["d_ff"] = 200
    edited["data"]["train"][0]["name"] = "books"
    assert config_hash(cfg) == config_hash(resolve_run_config(edited)) != config_hash(base)
    assert cfg.train.steps == 30 and cfg.optim.lr == 6e-4 and cfg.model.d_ff == 200
    # run-time settings (device, tracking) never change the run id
    runtime = load_run_config(path, ["train.device=cpu", "tracking.wandb=true", "tracking.print_every=1"])
    assert config_hash(runtime) == config_hash(base) and runtime.tracking.wandb
    # switching from steps to tokens needs both keys, as an edit would
    assert load_run_config(path, ["train.steps=null", "train.tokens=1e4"]).train.total_steps == 40


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("train.stpes=5", ["override 'train.stpes=5'", "Did you mean 'steps'?"]),
        ("trian.steps=5", ["override 'trian.steps=5'", "Did you mean 'train'?"]),
        ("train.steps=-5", ["override 'train.steps=-5'", "must be >= 1"]),
        ("train.seq_len=long", ["override 'train.seq_len=long'", "expected an integer"]),
        ("model.d_fff=2", ["override 'model.d_fff=2'", "Did you mean 'd_ff'?"]),
        ("train.steps.max=5", ["override 'train.steps.max=5'", "not a mapping"]),
        ("data.train.3.name=x", ["not an index"]),
        ("tracking.wandb_mode=sometimes", ["override 'tracking.wandb_mode=sometimes'", "'offline'"]),
    ],
)
def test_bad_train_overrides_name_the_override_and_the_nearest_key(tmp_path, override, fragments):
    path = write(tmp_path / "run.yaml", RUN)
    with pytest.raises(ConfigError) as err:
        load_run_config(path, [override])
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_ablate_train_reports_a_bad_override_in_one_line(tmp_path, capsys):
    path = write(tmp_path / "run.yaml", RUN)
    assert main(["train", str(path), "train.stpes=5", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean 'steps'?" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_sweep_overrides_edit_fields_or_every_run(tmp_path, capsys):
    path = write(tmp_path / "sweep.yaml", SWEEP)
    plain = expand_sweep(load_sweep(path))
    overrides = ["train.steps=7", "grid.optim.lr=[2e-3]", "seeds=[0,1]", "resources.time=02:00:00"]
    sweep = load_sweep(path, overrides)
    runs = expand_sweep(sweep)
    assert len(runs) == 2 * 1 * 2 and sweep.resources.time == "02:00:00"
    # a run-config key applies to every run, after its arm (the 1:7 arm sets its own steps)
    assert {r.config.train.steps for r in runs} == {7} and {r.config.optim.lr for r in runs} == {2e-3}
    assert not {r.run_id for r in runs} & {r.run_id for r in plain}
    # the same as editing the file
    edited = copy.deepcopy(SWEEP)
    edited["base"]["train"]["steps"] = 7
    edited["arms"]["1:7"]["train"]["steps"] = 7
    edited["arms"]["attention"]["train"] = {"steps": 7}
    edited["grid"] = {"optim.lr": [2e-3]}
    edited["seeds"] = [0, 1]
    by_edit = expand_sweep(load_sweep(write(tmp_path / "e.yaml", edited)))
    assert [r.run_id for r in runs] == [r.run_id for r in by_edit]
    # one arm only; run-time keys leave every run id alone
    one = expand_sweep(load_sweep(path, ["arms.1:7.optim.lr=5e-4", "grid.optim.lr=[5e-4]"]))
    assert {r.config.optim.lr for r in one} == {5e-4}
    same = expand_sweep(load_sweep(path, ["tracking.tensorboard=true", "train.num_workers=2"]))
    assert [r.run_id for r in same] == [r.run_id for r in plain]
    assert all(r.config.tracking.tensorboard for r in same)

    # Adding an arm or an axis from the command line takes a leading '+'.
    added = expand_sweep(
        load_sweep(path, ["+arms.mamba.model.preset=tiny-mamba", "+grid.optim.eps=[1e-8,1e-6]"])
    )
    assert {r.arm for r in added} == {"attention", "1:7", "mamba"} and len(added) == 2 * len(plain) // 2 * 3

    assert main(["sweep", "plan", str(path), "train.steps=7", "--no-sbatch"]) == 0
    out = capsys.readouterr().out
    assert all(r.run_id in out for r in expand_sweep(load_sweep(path, ["train.steps=7"])))


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("train.stpes=5", ["override 'train.stpes=5'", "Did you mean 'steps'?"]),
        ("resorces.time=1", ["override 'resorces.time=1'", "Did you mean 'resources'?"]),
        ("resources.tme=1", ["override 'resources.tme=1'", "Did you mean 'time'?"]),
        ("optim.lr=1e-3", ["optim.lr", "axis of the sweep's grid", "grid.optim.lr"]),
        ("arms.1:7.train.steps=-1", ["override 'arms.1:7.train.steps=-1'", "must be >= 1"]),
        ("eval_options.icl.shots=x", ["override 'eval_options.icl.shots=x'"]),
        # A typo'd arm or axis would add one that launch trains: refused, with the nearest name.
        ("arms.atention.optim.lr=1e-3", ["no arm 'atention'", "Did you mean 'attention'?", "+arms.atention"]),
        ("grid.optim.l=[1e-3]", ["no grid axis 'optim.l'", "Did you mean 'optim.lr'?", "+grid.optim.l"]),
        ("+arms.1:7.optim.lr=1e-3", ["already has the arm '1:7'", "drop the leading '+'"]),
        ("+train.steps=3", ["a leading '+' adds an arm or a grid axis"]),
    ],
)
def test_bad_sweep_overrides_fail_before_anything_is_written(tmp_path, override, fragments, capsys):
    path = write(tmp_path / "sweep.yaml", SWEEP)
    root = tmp_path / "runs"
    assert main(["sweep", "launch", str(path), override, "--root", str(root), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert not root.exists()
