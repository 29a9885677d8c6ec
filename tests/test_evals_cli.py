"""``ablate eval``: suites write self-describing evals/*.json and log events; user mistakes are one clear
ConfigError before any model is loaded; the registry matches the sweep schema's suite names."""

import argparse
import json
import shutil
import subprocess
import sys

import pytest
import torch

from evals.cli import add_eval_commands, selected_suites
from evals.suites import SUITES, run_suite
from harness.config_loader import ConfigError
from harness.sweeps.config import EVAL_SUITES
from harness.training.config import config_hash, load_run_config
from harness.training.rundir import read_jsonl

# Two cores shared with other test processes: one thread avoids OpenMP spin-waiting (30x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


def ablate_eval(argv: list[str]) -> int:
    """``ablate eval ...`` through the same argparse wiring harness.cli uses."""
    parser = argparse.ArgumentParser(prog="ablate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_commands(sub)
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


@pytest.fixture
def run_copy(hybrid_run, tmp_path):  # noqa: F811
    """A private copy of the trained run, so results written here never reach other tests."""
    return shutil.copytree(hybrid_run, tmp_path / "run")


def test_registry_matches_sweep_suites():
    assert tuple(SUITES) == EVAL_SUITES
    assert selected_suites(["all"]) == list(EVAL_SUITES)
    assert selected_suites(["icl", "perplexity", "icl"]) == ["icl", "perplexity"]


def test_eval_writes_results_with_provenance(run_copy, capsys):
    argv = [str(run_copy), "--suite", "perplexity", "--suite", "icl", "--suite", "induction"]
    argv += ["--suite", "attention", "--limit", "4", "--device", "cpu"]
    argv += ["-o", "perplexity.max_doc_bytes=1500", "-o", "icl.tasks=[imdb]", "-o", "icl.max_new_tokens=3"]
    before = len(read_jsonl(run_copy / "events.jsonl"))
    assert ablate_eval(argv) == 0
    out = capsys.readouterr().out
    cfg = load_run_config(run_copy / "config.yaml")
    for suite in ("perplexity", "icl", "induction", "attention"):
        path = run_copy / "evals" / f"{suite}.json"
        assert str(path) in out
        record = json.loads(path.read_text())
        assert record["suite"] == suite and record["step"] == 60 and record["checkpoint"] == "step_00000060"
        assert record["config_hash"] == config_hash(cfg) and record["pattern"] == "M-M-M-M-*-M-M-M-"
        assert record["versions"]["torch"] == torch.__version__ and "python" in record["versions"]
        assert record["limit"] == 4 and record["elapsed_s"] > 0 and record["device"] == "cpu"
        assert record["metrics"]
    ppl = json.loads((run_copy / "evals" / "perplexity.json").read_text())
    assert {r["documents"] for r in ppl["corpora"].values()} == {4}
    assert ppl["options"] == {"max_doc_bytes": 1500}
    icl = json.loads((run_copy / "evals" / "icl.json").read_text())
    assert (
        icl["queries"] == 4 and icl["shots"] >= 1 and icl["tasks"]["imdb"]["settings"]["max_new_tokens"] == 3
    )
    assert json.loads((run_copy / "evals" / "induction.json").read_text())["induction"]["sequences"] == 4
    attn = json.loads((run_copy / "evals" / "attention.json").read_text())
    assert attn["n_heads"] == 4 and (run_copy / "evals" / attn["maps_file"]).exists()
    events = read_jsonl(run_copy / "events.jsonl")[before:]
    assert all(e["event"] == "eval" for e in events)
    assert [e["suite"] for e in events] == ["perplexity", "icl", "induction", "attention"]
    assert all(e["step"] == 60 and e["metrics"] for e in events)
    assert "logprob/byte" in out and "loglik acc" in out and "induction" in out and "heads in layers" in out


def test_run_suite_api_takes_limit_from_options(run_copy):
    path = run_suite(run_copy, "induction", options={"limit": 2, "natural_corpus": None}, device="cpu")
    record = json.loads(path.read_text())
    assert record["induction"]["sequences"] == 2 and record["natural_text"] == {"status": "skipped"}


def test_user_mistakes_are_config_errors_before_loading(tmp_path):
    missing = str(tmp_path / "no-such-run")
    with pytest.raises(ConfigError, match="unknown eval suite 'perplexty'. Did you mean 'perplexity'"):
        ablate_eval([missing, "--suite", "perplexty"])
    with pytest.raises(ConfigError, match="no option 'shot'. Did you mean 'shots'"):
        ablate_eval([missing, "--suite", "icl", "-o", "icl.shot=2"])
    with pytest.raises(ConfigError, match="SUITE.KEY=VALUE"):
        ablate_eval([missing, "--suite", "icl", "-o", "shots=2"])
    with pytest.raises(ConfigError, match="not among the suites run"):
        ablate_eval([missing, "--suite", "icl", "-o", "perplexity.stride=8"])
    with pytest.raises(ConfigError, match="not a run directory"):
        ablate_eval([missing, "--suite", "icl"])
    with pytest.raises(ConfigError, match="unknown eval suite"):
        run_suite(missing, "bogus")


def test_registry_imports_runners_lazily():
    """`ablate eval --suite perplexity` must not import lm-evaluation-harness or the suites that need it."""
    code = (
        "import sys, evals.suites, evals.cli; "
        "print('evals.lm_eval_suites' in sys.modules, 'lm_eval' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
