"""Hostile and broken user files, made from the project's own sweep and run files: each is refused in one
line (file, key where the value sits, the valid range or what to do), exit 2, before anything is written.
The generative version of these cases is tests/test_generative_inputs.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from ablate.cli import main
from harness.config_errors import ConfigError
from harness.training.config import load_run_config
from harness.training.record import prepare_run_dir
from harness.training.rundir import RunDir
from harness.yaml_gate import MAX_YAML_BYTES, load_yaml

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "table4-tiny.yaml"
RUN = REPO / "sweeps" / "runs" / "tiny-1to7-web.yaml"
MQAR = REPO / "sweeps" / "runs" / "tiny-mqar.yaml"


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work in an empty folder: whatever a refused command wrote would show up in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """``ablate ARGV`` exits 2 with one line that holds every fragment; returns the line."""
    before = files(Path.cwd())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ablate: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert files(Path.cwd()) == before, "a refused command wrote files"
    return err


def edited(text: str, old: str, new: str, name: str) -> Path:
    assert old in text, old
    path = Path(name)
    path.write_text(text.replace(old, new, 1))
    return path


# ------------------------------------------------------------------------------------- silently accepted
def test_duplicate_key_is_refused(here, capsys):
    text = SWEEP.read_text()
    path = edited(text, "  mamba:\n", "  mamba:\n    model: {preset: tiny-1to7}\n  mamba:\n", "dup.yaml")
    refused(capsys, ["sweep", "plan", str(path)], "dup.yaml", "key 'arms.mamba'", "duplicate key 'mamba'")
    path = edited(RUN.read_text(), "  seed: 0\n", "  seed: 0\n  seed: 1\n", "dup-run.yaml")
    refused(capsys, ["train", str(path)], "dup-run.yaml", "key 'train.seed'", "line 14")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
def test_non_finite_numbers_are_refused_with_the_range(here, capsys, value):
    path = edited(SWEEP.read_text(), "    lr: 0.003\n", f"    lr: {value}\n", "nan.yaml")
    refused(capsys, ["sweep", "plan", str(path)], "nan.yaml", "key 'base.optim.lr'", "finite number > 0")
    path = edited(RUN.read_text(), "lr: 3.0e-3", f"lr: {value}", "nan-run.yaml")
    refused(capsys, ["train", str(path)], "nan-run.yaml", "key 'optim.lr'", "finite number > 0")


@pytest.mark.parametrize(
    "old, new, key, valid",
    [
        (
            "  checkpoint_every: 50\n",
            "  checkpoint_every: -5\n",
            "train.checkpoint_every",
            "must be >= 0, got -5",
        ),
        ("  checkpoint_every: 50\n", "  checkpoint_every: 50\n  keep_last: -1\n", "train.keep_last", ">= 0"),
        ("weight_decay: 0.1", "weight_decay: -0.1", "optim.weight_decay", "must be >= 0, got -0.1"),
        ("weight_decay: 0.1", "weight_decay: 0.1, beta2: 1.5", "optim.beta2", "must be in [0, 1), got 1.5"),
        ("  seed: 0\n", "  seed: -1\n", "train.seed", "must be in [0, 4294967295]"),
    ],
)
def test_out_of_range_values_are_refused_with_the_range(here, capsys, old, new, key, valid):
    path = edited(RUN.read_text(), old, new, "range.yaml")
    refused(capsys, ["train", str(path)], "range.yaml", f"key '{key}'", valid)


# ----------------------------------------------------------------------------------------- tracebacks
def test_alias_bomb_is_refused_at_once(here, capsys):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = SWEEP.read_text() + "\n".join(lines).replace("a0:", "x_bomb0:", 1) + "\n"
    path = Path("bomb.yaml")
    path.write_text(text)
    t0 = time.perf_counter()
    err = refused(capsys, ["sweep", "plan", str(path)], "bomb.yaml", "expands to more than 100,000 values")
    assert time.perf_counter() - t0 < 5 and len(err) < 300
    Path("rec.yaml").write_text("name: x\nbase: &b {model: [*b]}\n")
    refused(capsys, ["sweep", "plan", "rec.yaml"], "rec.yaml", "recursive alias")
    Path("deep.yaml").write_text("name: x\nbase: " + "[" * 400 + "]" * 400 + "\n")
    refused(capsys, ["sweep", "plan", "deep.yaml"], "deep.yaml", "nested deeper than")
    Path("huge.yaml").write_text("name: x\n" + "#" * MAX_YAML_BYTES + "\n")
    refused(capsys, ["sweep", "plan", "huge.yaml"], "huge.yaml", "larger than 256 KiB")
    Path("digits.yaml").write_text(f"name: x\nseeds: [{'9' * 5000}]\n")
    refused(capsys, ["sweep", "plan", "digits.yaml"], "digits.yaml", "invalid value")


def test_pattern_repeat_is_bounded(here, capsys):
    path = edited(
        SWEEP.read_text(),
        "      preset: tiny-mamba\n",
        "      preset: tiny-mamba\n      pattern: (M-)x10000000000\n",
        "p.yaml",
    )
    t0 = time.perf_counter()
    refused(
        capsys, ["sweep", "plan", str(path)], "key 'arms.mamba.model.pattern'", "more than 10,000 sublayers"
    )
    assert time.perf_counter() - t0 < 5
    text = RUN.read_text().replace(
        "model: {preset: tiny-1to7}", "model: {preset: tiny-1to7, layout: {layers: 99999999}}"
    )
    Path("layers.yaml").write_text(text)
    refused(capsys, ["train", "layers.yaml"], "key 'model.layout.layers'", "must be in [1, 5000]")


def test_non_utf8_file_names_the_byte(here, capsys):
    raw = RUN.read_bytes().replace(b"name: tiny-1to7-web", b"name: tiny-1to7-caf\xe9")
    Path("latin1.yaml").write_bytes(raw)
    refused(capsys, ["train", "latin1.yaml"], "latin1.yaml", "not UTF-8", "byte 0xe9 at offset", "line 3")
    Path("utf16.yaml").write_bytes(RUN.read_text().encode("utf-16"))
    refused(capsys, ["sweep", "plan", "utf16.yaml"], "utf16.yaml", "not UTF-8", "offset 0")
    Path("nul.yaml").write_text("name: x\x00\n")
    refused(capsys, ["sweep", "plan", "nul.yaml"], "nul.yaml", "character #x0000")


def test_unquoted_arm_names_that_yaml_reads_as_numbers(here, capsys):
    path = edited(SWEEP.read_text(), "  '1:7':\n", "  1:7:\n", "sexagesimal.yaml")
    refused(capsys, ["sweep", "plan", str(path)], "key 'arms.67'", "quote it")


def test_option_values_pass_the_gate(here, capsys):
    refused(capsys, ["eval", ".", "--suite", "icl", "-o", "icl.shots=&a [*a]"], "--option", "recursive alias")


# ------------------------------------------------------------------------------------- writes elsewhere
def test_unsafe_run_name_is_refused_before_writing(here, capsys):
    for name in ("../../x", "a/b", "..", ".hidden", "'tab\\there'", "''"):
        path = edited(RUN.read_text(), "name: tiny-1to7-web", f"name: {name}", "name.yaml")
        refused(capsys, ["train", str(path)], "name.yaml", "key 'name'", "one safe path component")
    assert not (here.parent / "x").exists()


def test_dry_run_and_plans_write_nothing(here, capsys):
    before = files(here)
    assert main(["sweep", "launch", str(SWEEP), "--dry-run", "--executor", "local", "--root", "runs"]) == 0
    assert main(["sweep", "plan", str(SWEEP)]) == 0
    Path("model.yaml").write_text("model: {vocab_size: 64, d_model: 16, d_ff: 32, pattern: '(M-*-)x2'}\n")
    before = files(here)
    assert main(["plan", "--config", "model.yaml"]) == 0
    assert main(["train", str(RUN), "--dry-run"]) == 0
    assert "would start tiny-1to7-web" in capsys.readouterr().out
    assert files(here) == before  # no runs/, no launch lock, no run directory


def test_tokenizer_and_mqar_checks_run_before_writing(here, capsys):
    path = edited(RUN.read_text(), "vocab_size: 4096", "vocab_size: 8192", "tok.yaml")
    refused(
        capsys,
        ["train", str(path)],
        "key 'data.tokenizer.vocab_size'",
        "8192 tokens",
        "model.vocab_size is 4096",
    )
    path = edited(RUN.read_text(), "kind: bpe, vocab_size: 4096", "kind: gpt2", "gpt2.yaml")
    refused(capsys, ["train", str(path)], "key 'model.vocab_size'", "50257 tokens")
    path = edited(MQAR.read_text(), "seq_lens: [128]", "seq_lens: [256]", "mqar.yaml")
    refused(
        capsys, ["train", str(path)], "key 'data.train[1].mqar.seq_lens'", "exceeds the run's train.seq_len"
    )
    path = edited(
        MQAR.read_text(), "num_pairs: [4, 8, 16]", "vocab: 8000, num_pairs: [4, 8, 16]", "mqar.yaml"
    )
    refused(
        capsys, ["train", str(path)], "key 'data.train[0].mqar.vocab'", "exceeds the tokenizer's vocab_size"
    )
    sweep = yaml.safe_load(SWEEP.read_text())
    sweep["resources"]["gpus_per_node"] = 3
    Path("gpus.yaml").write_text(yaml.safe_dump(sweep))
    refused(capsys, ["sweep", "plan", "gpus.yaml"], "key 'base.train.global_batch'", "8 x 3", "3 processes")
    refused(capsys, ["sweep", "launch", "gpus.yaml", "--executor", "local"], "micro_batch x processes")


def test_sweep_size_is_bounded_before_expansion(here, capsys):
    sweep = yaml.safe_load(SWEEP.read_text())
    sweep["grid"] = {"optim.lr": [i / 1e4 + 1e-4 for i in range(40)], "train.seq_len": list(range(64, 71))}
    Path("big.yaml").write_text(yaml.safe_dump(sweep))
    refused(capsys, ["sweep", "plan", "big.yaml"], "key 'grid'", "1,120 runs", "at most 1000")
    sweep["grid"], sweep["seeds"] = {}, [0, 1, 0]
    Path("seeds.yaml").write_text(yaml.safe_dump(sweep))
    refused(capsys, ["sweep", "plan", "seeds.yaml"], "key 'seeds'", "lists 0 twice")


# ----------------------------------------------------------------------------------------- misleading
def test_key_path_is_where_the_value_sits(here, capsys):
    sweep = yaml.safe_load(SWEEP.read_text())
    sweep["base"]["optim"]["lr"] = -1
    Path("s.yaml").write_text(yaml.safe_dump(sweep))
    err = refused(capsys, ["sweep", "plan", "s.yaml"], "key 'base.optim.lr'", "in base, inherited by arm")
    assert "arms." not in err
    sweep["base"]["optim"]["lr"] = 0.003
    sweep["arms"]["mamba"]["optim"] = {"lr": -1}
    Path("s.yaml").write_text(yaml.safe_dump(sweep))
    refused(capsys, ["sweep", "plan", "s.yaml"], "key 'arms.mamba.optim.lr'", "must be > 0")
    del sweep["arms"]["mamba"]["optim"]
    sweep["grid"] = {"optim.lr": [0.001, -2.0]}
    Path("s.yaml").write_text(yaml.safe_dump(sweep))
    refused(capsys, ["sweep", "plan", "s.yaml"], "key 'grid.optim.lr'", "grid point optim.lr=-2.0")


def test_preset_errors_name_the_model_key(here, capsys):
    path = edited(
        SWEEP.read_text(), "      preset: tiny-mamba\n", "      preset: tiny-mambo\n", "preset.yaml"
    )
    refused(
        capsys, ["sweep", "plan", str(path)], "key 'arms.mamba.model.preset'", "Did you mean 'tiny-mamba'"
    )
    path = edited(
        SWEEP.read_text(), "  mamba:\n    model:\n      preset", "  mamba:\n    preset", "nomodel.yaml"
    )
    refused(capsys, ["sweep", "plan", str(path)], "key 'arms.mamba.preset'", "Did you mean 'model.preset'")
    path = edited(
        SWEEP.read_text(), "      preset: tiny-mamba\n", "      preset: [tiny-mamba]\n", "list.yaml"
    )
    refused(capsys, ["sweep", "plan", str(path)], "key 'arms.mamba.model.preset'", "expected a preset name")


def test_a_directory_is_not_file_not_found(here, capsys):
    Path("adir").mkdir()
    refused(capsys, ["sweep", "plan", "adir"], "adir: is a directory, not a YAML file")
    refused(capsys, ["sweep", "status", "missing.yaml"], "missing.yaml: file not found")
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(here)


def test_edited_config_yaml_names_both_ids_and_the_keys(tmp_path):
    cfg = load_run_config(RUN)
    run = RunDir(tmp_path / "run")
    prepare_run_dir(cfg, run)
    text = run.config.read_text()
    run.config.write_text(text.replace("lr: 0.003", "lr: 0.004"))
    with pytest.raises(ConfigError) as err:
        prepare_run_dir(cfg, run)
    stored = load_run_config(run.config)
    from harness.training.config import config_hash

    msg = str(err.value)
    assert config_hash(stored) != config_hash(cfg)
    assert config_hash(stored) in msg and config_hash(cfg) in msg and "optim.lr: 0.004 -> 0.003" in msg


def test_missing_keys_and_misplaced_sections_are_named(here, capsys):
    sweep = yaml.safe_load(SWEEP.read_text())
    del sweep["base"]["train"]["steps"]
    Path("s.yaml").write_text(yaml.safe_dump(sweep))
    refused(capsys, ["sweep", "plan", "s.yaml"], "key 'base.train.steps'", "give exactly one of 'steps'")
    sweep = yaml.safe_load(SWEEP.read_text())
    sweep["base"]["train"] = "-{'seq_len': 256}"
    Path("s.yaml").write_text(yaml.safe_dump(sweep))
    refused(
        capsys, ["sweep", "plan", "s.yaml"], "key 'base.train'", "expected a mapping, got str", "seeds set"
    )
    path = edited(RUN.read_text(), "name: tiny-1to7-web\n", "nme: tiny-1to7-web\n", "n.yaml")
    refused(capsys, ["train", str(path)], "key 'nme'", "Did you mean 'name'?")
    path = edited(RUN.read_text(), "name: tiny-1to7-web\n", "", "n.yaml")
    refused(capsys, ["train", str(path)], "key 'name'", "missing key 'name' (required in RunConfig: name,")
