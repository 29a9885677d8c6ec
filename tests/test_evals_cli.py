"""``ablate eval``: suites write self-describing evals/*.json and log events; ad-hoc settings never replace
a planned result; a run pinned to the CUDA scan evaluates on a CPU; user mistakes are one clear ConfigError
before any model is loaded."""

import argparse
import json
import shutil
import subprocess
import sys

import pytest
import torch

from ablate.cli import main
from evals.cli import add_eval_commands, selected_suites
from evals.plan import plan_record, resolve_plan
from evals.runner import run_suite
from evals.suites import SUITES
from harness.config_errors import ConfigError
from harness.training.config import config_hash, load_run_config
from harness.training.record import build_record
from harness.training.rundir import RunDir, read_jsonl

# Two cores shared with other test processes: one thread avoids OpenMP spin-waiting (30x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


def ablate_eval(argv: list[str]) -> int:
    """``ablate eval ...`` through the same argparse wiring ablate.cli uses."""
    parser = argparse.ArgumentParser(prog="ablate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_commands(sub)
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


@pytest.fixture
def run_copy(hybrid_run, tmp_path):  # noqa: F811
    """A private copy of the trained run, so results written here never reach other tests."""
    return shutil.copytree(hybrid_run, tmp_path / "run")


def test_selected_suites():
    assert selected_suites(["all"]) == list(SUITES)
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
        stack = record["environment"]
        assert stack["packages"]["torch"] == torch.__version__ and stack["packages"]["lm_eval"]
        assert stack["python"] and len(stack["commit"]) == 40
        assert record["limit"] == 4 and record["elapsed_s"] > 0 and record["device"] == "cpu"
        assert record["metrics"] and record["spec"]["limit"] == 4 and len(record["spec_hash"]) == 12
        assert record["planned"] is False  # a run of `ablate train` has no plan
    ppl = json.loads((run_copy / "evals" / "perplexity.json").read_text())
    assert {r["documents"] for r in ppl["corpora"].values()} == {4}
    assert ppl["spec"]["max_doc_bytes"] == 1500 and ppl["spec"]["corpora"] == ["c4", "books", "code"]
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


def _plan(run_dir, suites, options):
    """Give a trained run the plan a sweep would have recorded in its run.json."""
    run = RunDir(run_dir)
    cfg = load_run_config(run.config)
    plan = resolve_plan(suites, options)
    run.write_record(build_record(cfg, created_by="test", eval_plan=plan_record(plan)))
    return plan


def test_adhoc_settings_never_replace_the_planned_result(run_copy, capsys):
    """`ablate eval RUN --suite perplexity --limit 5` after a sweep leaves the planned result unchanged."""
    _plan(run_copy, ["perplexity"], {"perplexity": {"limit": 3, "corpora": ["c4"], "max_doc_bytes": 2000}})
    base = [str(run_copy), "--suite", "perplexity", "--device", "cpu"]
    assert ablate_eval(base) == 0  # the plan's own options: the planned result
    planned = run_copy / "evals" / "perplexity.json"
    first = planned.read_bytes()
    record = json.loads(first)
    assert record["planned"] is True and record["spec"]["limit"] == 3 and record["limit"] == 3
    assert "planned" in capsys.readouterr().out

    assert ablate_eval([*base, "--limit", "5"]) == 0
    assert planned.read_bytes() == first  # untouched
    (adhoc,) = (run_copy / "evals" / "adhoc").glob("perplexity-*.json")
    extra = json.loads(adhoc.read_text())
    assert extra["planned"] is False and extra["limit"] == 5 and extra["spec"]["corpora"] == ["c4"]
    assert adhoc.name == f"perplexity-{extra['spec_hash']}.json" and "ad hoc" in capsys.readouterr().out

    # A batch size is a run-time setting: the same spec, so the planned result is rewritten, not an ad hoc.
    assert ablate_eval([*base, "-o", "perplexity.batch_size=2"]) == 0
    assert json.loads(planned.read_text())["spec_hash"] == record["spec_hash"]
    assert len(list((run_copy / "evals" / "adhoc").glob("*.json"))) == 1

    assert ablate_eval([*base, "--limit", "2", "--overwrite"]) == 0
    assert json.loads(planned.read_text())["limit"] == 2  # asked for explicitly

    out = run_copy.parent / "elsewhere"
    before = sorted(p.name for p in (run_copy / "evals").rglob("*"))
    events = len(read_jsonl(run_copy / "events.jsonl"))
    assert ablate_eval([*base, "--limit", "1", "--out", str(out)]) == 0
    assert json.loads((out / run_copy.name / "perplexity.json").read_text())["limit"] == 1
    assert sorted(p.name for p in (run_copy / "evals").rglob("*")) == before
    assert len(read_jsonl(run_copy / "events.jsonl")) == events


def test_run_pinned_to_cuda_scan_evaluates_on_cpu(run_copy):
    """The scan backend is a run-time setting: a config that pins `cuda` keeps its run id and evaluates on
    a machine without CUDA with --scan-backend (or the default, auto)."""
    import yaml

    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    before = config_hash(load_run_config(run_copy / "config.yaml"))
    config["model"]["mamba"]["scan_backend"] = "cuda"
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert config_hash(load_run_config(run_copy / "config.yaml")) == before
    argv = [str(run_copy), "--suite", "induction", "--device", "cpu", "--limit", "2"]
    assert ablate_eval([*argv, "-o", "induction.natural_corpus=null", "--scan-backend", "cpu"]) == 0
    result = json.loads((run_copy / "evals" / "induction.json").read_text())
    assert result["config_hash"] == before and result["device"] == "cpu"


def test_a_scan_backend_that_cannot_run_here_is_one_line(run_copy, capsys):
    """Asked for explicitly on a machine without mamba_ssm's kernel: the reason, not a traceback."""
    argv = ["eval", str(run_copy), "--suite", "induction", "--device", "cpu", "--scan-backend", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "scan_backend" in err and "needs CUDA tensors" in err and "Traceback" not in err


def test_eval_refuses_a_run_directory_in_use(run_copy):
    """One writer per run directory: while another process holds it, `ablate eval` is refused at once,
    naming the holder (pid, host); --out still works (it writes elsewhere)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from harness.training.rundir import RunDir; "
            "lock = RunDir(sys.argv[1]).lock('train'); lock.__enter__(); print('held', flush=True); "
            "time.sleep(60)",
            str(run_copy),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by train \(pid {holder.pid} on "):
            ablate_eval([str(run_copy), "--suite", "induction", "--device", "cpu", "--limit", "2"])
        argv = [str(run_copy), "--suite", "induction", "--limit", "2", "--out", str(run_copy.parent / "o")]
        assert ablate_eval([*argv, "-o", "induction.natural_corpus=null"]) == 0
    finally:
        holder.kill()
        holder.wait()


def test_user_mistakes_are_config_errors_before_loading(tmp_path):
    missing = str(tmp_path / "no-such-run")
    with pytest.raises(ConfigError, match="unknown eval suite 'perplexty'. Did you mean 'perplexity'"):
        ablate_eval([missing, "--suite", "perplexty"])
    with pytest.raises(ConfigError, match="no option 'shot'. Did you mean 'shots'"):
        ablate_eval([missing, "--suite", "icl", "-o", "icl.shot=2"])
    with pytest.raises(ConfigError, match="key 'icl.shots': expected an integer, got str 'many'"):
        ablate_eval([missing, "--suite", "icl", "-o", "icl.shots=many"])
    with pytest.raises(ConfigError, match="key 'icl.max_new_tokens': must be >= 1, got 0"):
        ablate_eval([missing, "--suite", "icl", "-o", "icl.max_new_tokens=0"])
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


def test_eval_on_a_live_run_is_refused_before_any_checkpoint_is_loaded(tmp_path, capsys):
    """The lock is checked first: a run being trained is refused at once (it was refused only after an 8 s
    checkpoint load); --out evaluates it without writing into it."""
    from harness.training.rundir import RunDir

    run = tmp_path / "live-run"  # no checkpoint at all: a load would fail differently
    run.mkdir()
    with RunDir(run).lock("train"):
        assert main(["eval", str(run), "--suite", "perplexity"]) == 2
    err = capsys.readouterr().err
    assert "is in use by train" in err and "--out DIR" in err and "Traceback" not in err
