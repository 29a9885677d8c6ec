"""Sweep files: schema, expansion into runs, run identity, the paper's sweep files, and broken files."""

from pathlib import Path

import pytest
import yaml

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.presets import FAMILIES
from sweeps.config import expand_sweep, load_sweep
from sweeps.plan import run_costs

_SWEEP_DIR = Path(__file__).resolve().parents[1] / "sweeps"
# sweeps/runs/ holds single-run configs (ablate train), not sweeps
SWEEPS = sorted(
    [*_SWEEP_DIR.glob("*.yaml"), *(p for p in _SWEEP_DIR.glob("*/*.yaml") if p.parent.name != "runs")]
)
TINY = {
    "name": "mini-test",
    "base": {
        "model": {"preset": "tiny-1to7"},
        "data": {"train": [{"name": "c4"}], "tokenizer": {"kind": "bpe", "vocab_size": 512}},
        "train": {"seq_len": 64, "global_batch": 4, "micro_batch": 4, "steps": 10},
    },
    "arms": {"attention": {"model": {"preset": "tiny-attention"}}, "1:7": {"model": {"preset": "tiny-1to7"}}},
    "grid": {"optim.lr": [1.0e-3, 3.0e-3]},
    "seeds": [0, 1],
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_sweep_file_validates():
    assert len(SWEEPS) >= 15
    for path in SWEEPS:
        runs = expand_sweep(load_sweep(path), source=str(path))
        assert runs, path
        assert len({r.run_id for r in runs}) == len(runs), path


def test_table4_has_four_arms_at_1_3b(capsys):
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "table4.yaml")
    runs = expand_sweep(sweep)
    assert [r.arm for r in runs] == ["attention", "mamba", "1:3", "1:7"]
    target = FAMILIES["1.3b"].target_params
    for run in runs:
        costs = run_costs(run, sweep.resources)
        assert abs(costs["params_total"] / target - 1) <= 0.03
        assert costs["tokens"] >= 250e9 and costs["gpu_hours"] > 100
    assert main(["sweep", "plan", "sweeps/table4.yaml"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "#SBATCH --array=0-3" in out and "#SBATCH --gpus-per-node=8" in out


def test_expansion_grid_seeds_and_identity(tmp_path):
    runs = expand_sweep(load_sweep(write(tmp_path, TINY)))
    assert len(runs) == 2 * 2 * 2
    assert {r.config.optim.lr for r in runs} == {1.0e-3, 3.0e-3}
    assert {r.config.train.seed for r in runs} == {0, 1}
    assert {r.config.model.pattern for r in runs} == {"*-" * 8, "M-M-M-M-*-M-M-M-"}
    again = expand_sweep(load_sweep(write(tmp_path, TINY)))
    assert [r.run_id for r in runs] == [r.run_id for r in again]  # deterministic
    edited = dict(TINY, arms={**TINY["arms"], "1:7": {"model": {"preset": "tiny-1to7", "d_ff": 64}}})
    after = expand_sweep(load_sweep(write(tmp_path, edited)))
    changed = {r.arm for r, s in zip(runs, after, strict=True) if r.run_id != s.run_id}
    assert changed == {"1:7"}  # editing one arm changes only that arm's runs


@pytest.mark.parametrize(
    "mutate, key, fragment",
    [
        (lambda d: d.update(seed=[0]), "seed", "Did you mean 'seeds'"),
        (lambda d: d["arms"]["1:7"]["model"].update(d_fff=3), "arms.1:7.model.d_fff", "Did you mean 'd_ff'"),
        (
            lambda d: d["arms"].update(bad={"model": {"preset": "tiny-1to7", "pattern": "M-Q-"}}),
            "arms.bad",
            "unknown symbol 'Q'",
        ),
        (
            lambda d: d["arms"].update(moe={"model": {"preset": "tiny-1to7-moe", "moe": {"top_k": 20}}}),
            "arms.moe.model.moe.top_k",
            "top_k (K) = 20",
        ),
        (lambda d: d["base"]["train"].update(steps=-5), "train.steps", "must be >= 1, got -5"),
        (
            lambda d: d["arms"].update(gone={"model": {"preset": "tiny-1to9"}}),
            "arms.gone",
            "unknown preset 'tiny-1to9'",
        ),
        (lambda d: d["base"]["train"].update(seq_len="long"), "train.seq_len", "expected an integer"),
        (lambda d: d.update(evals=["ollm", "hellaswag"]), "evals", "unknown eval suite 'hellaswag'"),
        (lambda d: d.update(resources={"time": "forever"}), "resources.time", "must be minutes or HH:MM:SS"),
    ],
)
def test_broken_sweep_files_name_the_key(tmp_path, capsys, mutate, key, fragment):
    import copy

    data = copy.deepcopy(TINY)
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        expand_sweep(load_sweep(path), source=str(path))
    msg = str(err.value)
    assert str(path) in msg and key in msg and fragment in msg, msg
    assert main(["sweep", "plan", str(path)]) == 2
    assert fragment in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # nothing written


def test_arms_that_differ_only_in_unsafe_characters(tmp_path):
    """`1:3` and `1;3` get two run directories (named after the arm, plus the run id); `1:3` and `1to3`,
    which no path-safe name tells apart, are refused before anything is written."""
    data = dict(TINY, grid={}, seeds=[0])
    data["arms"] = {"1:3": {"model": {"preset": "tiny-1to3"}}, "1;3": {"model": {"preset": "tiny-1to3"}}}
    runs = expand_sweep(load_sweep(write(tmp_path, data)))
    assert [r.dir_name.split("-")[0] for r in runs] == ["1to3", "1_3"]
    assert len({r.dir_name for r in runs}) == 2 and len({r.run_id for r in runs}) == 2
    data["arms"] = {"1:3": {"model": {"preset": "tiny-1to3"}}, "1to3": {"model": {"preset": "tiny-1to3"}}}
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match="arms '1:3' and '1to3'.*would share the run directory") as err:
        expand_sweep(load_sweep(path), source=str(path))
    assert err.value.key == "arms.1to3" and str(path) in str(err.value)


def test_runtime_settings_keep_the_run_id(tmp_path):
    """Kernel backend, device, compile, distribution strategy and loader workers are how a run runs, not
    what it is: changing only them keeps every run id (a run moves between GPU and CPU machines)."""
    before = [r.run_id for r in expand_sweep(load_sweep(write(tmp_path, TINY)))]
    data = dict(TINY, base={**TINY["base"]})
    data["base"]["model"] = {"preset": "tiny-1to7", "mamba": {"scan_backend": "cuda"}}
    data["base"]["train"] = {**TINY["base"]["train"], "device": "cuda", "compile": True, "num_workers": 2}
    data["base"]["train"]["distributed"] = "fsdp"
    after = expand_sweep(load_sweep(write(tmp_path, data)))
    assert [r.run_id for r in after] == before
    assert after[0].config.model.mamba.scan_backend == "cuda"  # still what the run will use
    data["base"]["train"]["seq_len"] = 32  # an experiment setting does change it
    assert [r.run_id for r in expand_sweep(load_sweep(write(tmp_path, data)))] != before


def test_eval_plan_is_checked_with_the_sweep_and_not_part_of_run_ids(tmp_path):
    data = dict(TINY, evals=["perplexity", "icl"], eval_options={"icl": {"shots": 4}})
    sweep = load_sweep(write(tmp_path, data))
    plan = sweep.eval_plan()
    assert list(plan) == ["perplexity", "icl"] and plan["icl"].shots == 4 and plan["icl"].limit == 500
    before = [r.run_id for r in expand_sweep(sweep)]
    data["eval_options"] = {"icl": {"shots": 8}}
    assert [r.run_id for r in expand_sweep(load_sweep(write(tmp_path, data)))] == before
    for options, key, fragment in (
        ({"icl": {"shotz": 4}}, "eval_options.icl", "Did you mean 'shots'"),
        ({"icl": {"shots": "four"}}, "eval_options.icl.shots", "expected an integer"),
        ({"icl": {"labels": ["Good"]}}, "eval_options.icl.labels", "two different words"),
        ({"ollm": {"limit": 5}}, "eval_options.ollm", "not in evals"),
    ):
        path = write(tmp_path, dict(data, eval_options=options))
        with pytest.raises(ConfigError, match=fragment) as err:
            load_sweep(path)
        assert err.value.key == key and str(path) in str(err.value)


def test_compare_names_existing_arms(tmp_path):
    data = dict(
        TINY, compare=[{"table": "table4", "baseline": "attention", "rows": {"1:7": "Jamba a:m=1:7"}}]
    )
    assert load_sweep(write(tmp_path, data)).compare[0].rows == {"1:7": "Jamba a:m=1:7"}
    data["compare"] = [{"table": "table4", "baseline": "atention"}]
    with pytest.raises(ConfigError, match="arm 'atention' is not one of the sweep's arms"):
        load_sweep(write(tmp_path, data))
