"""lm-evaluation-harness adapter: our :class:`HybridLM` as an ``lm_eval`` model named ``jamba-ablate``.

Importing this module registers the model, after which all of these work::

    lm_eval.simple_evaluate(model="jamba-ablate", model_args="pretrained=RUN,step=1000,batch_size=8", ...)
    lm_eval.simple_evaluate(model=JambaAblateLM(loaded=load_run(RUN)), ...)
    ablate lm-eval --model jamba-ablate --model_args pretrained=RUN --tasks hellaswag \
        --num_fewshot 10 --output_path results/ ...     # or: python -m evals.lm_eval_model ...

The run directory is given as ``pretrained=RUN`` (the key lm-eval users type for every model, and the one
lm-eval names its results folder after: ``results/<RUN with / as __>/results_<time>.json``) or, the same,
``run_dir=RUN`` (which the command line passes on as ``pretrained=``, so the folder is named either way).
lm-eval runs every task 0-shot unless ``--num_fewshot`` says otherwise; the paper's settings are in
evals/lm_eval_suites.py (HellaSwag 10-shot, WinoGrande 5, ...), which ``ablate eval`` applies.

Offline, pass ``task_manager=evals.benchmark_data.task_manager(offline=True)`` to ``simple_evaluate``
(without it lm-eval reads its tasks' data from the hub).

The last line is lm-eval's own command line (:func:`cli_main`). It needs this wrapper because lm-eval 0.4
finds models only through its built-in ``MODEL_MAPPING`` and whatever modules the process has imported; it
has no entry-point plugin discovery, so a bare ``lm_eval --model jamba-ablate`` cannot see us. Offline the
wrapper adds ``--include_path`` with the local task copies (evals/benchmark_data.py) unless you give one.

How requests are scored (the model has no attention mask, so batches are built to need none):

* ``loglikelihood``: requests sorted by length (longest first) and **right**-padded; every layer is causal
  (attention, the Mamba conv and scan) and MoE routing is per token and dropless, so pad tokens after a
  sequence cannot change its logits. Context + continuation is left-truncated to the training context
  ``seq_len``; requests sharing context + continuation[:-1] (multiple choice with one-token answers, e.g.
  MMLU's A/B/C/D) share one forward pass, as in lm-eval's HF model.
* ``loglikelihood_rolling``: lm-eval's disjoint rolling windows of at most ``seq_len`` predicted tokens,
  the first conditioned on EOS (the document separator the model was trained with).
* ``generate_until``: prefill, then one token at a time through the model's decoding cache (KV cache for
  attention, conv/SSM state for Mamba), exactly as :meth:`HybridLM.generate`. Left padding would feed pad
  tokens into the Mamba state, so only prompts of equal token length are batched together; every batch
  shares one static cache (a short batch is filled with copies of its first prompt), whose decoding step
  is captured once as a CUDA graph on CUDA and replayed. The prompt
  keeps its last ``seq_len`` tokens; generated tokens continue past it through the cache (recurrent
  state and attention without positional limits), rather than cutting the prompt down to
  ``seq_len - max_gen_toks`` as lm-eval's HF model does, which for short-context ablation models would
  discard the few-shot examples. Generation stops at EOS, at any ``until`` string (the text is cut
  before it) or after ``max_gen_toks`` tokens.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from evals.benchmark_data import _METADATA_HINT_FILTER
from harness.config_errors import ConfigError
from harness.environment import source_commit
from harness.model.decode import Decoder, next_token
from harness.training.loading import LoadedRun, load_run

log = logging.getLogger("evals")

MODEL_NAME = "jamba-ablate"
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_GEN_TOKS = 256
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature")


def _int_arg(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    hint = " (automatic batch sizing is not implemented)" if str(value).startswith("auto") else ""
    raise ConfigError(f"{MODEL_NAME}: {name} must be a whole number, got {value!r}{hint}")


@register_model(MODEL_NAME)
class JambaAblateLM(TemplateLM):
    """A trained run (one checkpoint) scored by lm-evaluation-harness.

    Build it from ``run_dir`` (+ ``step``, ``device``), as lm-eval does from ``model_args``, or from an
    already loaded run with ``loaded=``."""

    def __init__(
        self,
        run_dir: str | None = None,
        step: int | str | None = None,
        pretrained: str | None = None,
        device: str | None = "auto",
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        seed: int | str = 1234,
        loaded: LoadedRun | None = None,
        max_batch_size: int | None = None,  # lm-eval passes it to every model; batches here are fixed
    ) -> None:
        super().__init__()
        if pretrained not in (None, ""):
            if run_dir not in (None, "") and str(run_dir) != str(pretrained):
                raise ConfigError(f"{MODEL_NAME}: pretrained= and run_dir= name the same thing; give one")
            run_dir = pretrained
        if (loaded is None) == (run_dir is None):
            raise ConfigError(
                f"{MODEL_NAME}: give exactly one of pretrained=RUN_DIR (or run_dir=RUN_DIR) in model_args, "
                "or loaded=..."
            )
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"{MODEL_NAME}: device={device} asked for, but this torch has no CUDA device")
        if loaded is None:
            loaded = load_run(
                run_dir, step=None if step in (None, "") else _int_arg("step", step), device=device or "auto"
            )
        elif step not in (None, ""):
            raise ConfigError(f"{MODEL_NAME}: step= applies to run_dir=, not to an already loaded run")
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self._device = loaded.device
        self.batch_size = _int_arg("batch_size", batch_size)
        self.max_gen_toks = _int_arg("max_gen_toks", max_gen_toks)
        self.seed = _int_arg("seed", seed)
        if self.batch_size < 1 or self.max_gen_toks < 1:
            raise ConfigError(f"{MODEL_NAME}: batch_size and max_gen_toks must be >= 1")
        self._decoder: Decoder | None = None  # generate_until's one static cache (see _decoder_for)

    # lm-eval passes the CLI's --batch_size/--device (always set: --batch_size defaults to 1) next to
    # model_args; a key given in model_args is the more specific choice and wins instead of colliding.
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> JambaAblateLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> JambaAblateLM:
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if str(extra.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI defaults to --device cuda:0; like its HF model, fall back where there is none.
            log.warning("%s: device %s is not available; using the CPU", MODEL_NAME, extra.pop("device"))
        args = {**extra, **arg_dict}
        try:
            return cls(**args)
        except TypeError as e:
            accepted = "pretrained (or run_dir), step, device, batch_size, max_gen_toks, seed"
            raise ConfigError(f"{MODEL_NAME}: bad model_args ({e}); accepted: {accepted}") from None

    # ---------------------------------------------------------------------------------------- basics

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        """The training context: no forward pass sees more tokens at once."""
        return self.loaded.seq_len

    @property
    def tokenizer_name(self) -> str:
        return f"{self.tokenizer.kind}-{self.tokenizer.hash}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict:
        """Merged by lm-eval into ``results["config"]``."""
        return {**self.loaded.provenance(), "seq_len": self.max_length, "eval_batch_size": self.batch_size}

    @torch.inference_mode()
    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch).logits

    # ------------------------------------------------------------------------------ log-likelihoods

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """(request strings or None, context ids, continuation ids) -> (log p(continuation), is greedy)."""
        for _, ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError(
                    "loglikelihood needs a non-empty context and continuation (lm-eval adds EOS)"
                )
            if len(cont) > self.max_length:
                raise ValueError(
                    f"a continuation of {len(cont)} tokens cannot be scored in one window of seq_len "
                    f"{self.max_length}; use loglikelihood_rolling for long texts"
                )
        collator = Collator(
            requests,
            sort_fn=lambda req: (-len(req[1] + req[2]), tuple(req[1] + req[2])),
            group_by="contexts",
            group_fn=lambda req: req[1] + req[2][:-1],
        )
        results: list[tuple[float, bool]] = []
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests")
        for chunk in collator.get_batched(n=self.batch_size):
            inputs = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in chunk]
            width = max(len(x) for x in inputs)
            batch = torch.tensor(
                [x + [self.eot_token_id] * (width - len(x)) for x in inputs],
                dtype=torch.long,
                device=self.device,
            )
            logits = self._logits(batch)
            for (req_str, ctx, cont), inp, row in zip(chunk, inputs, logits, strict=True):
                # logits at position i predict token i + 1: the continuation is predicted by the last
                # len(cont) positions before the padding.
                logprobs = F.log_softmax(row[len(inp) - len(cont) : len(inp)].float(), dim=-1)[None]
                greedy = logprobs.argmax(-1)
                for req_str_i, cont_i, logprobs_i in collator.get_cache(
                    req_str=req_str, cxt_toks=ctx, cont_toks=cont, logits=logprobs
                ):
                    target = torch.tensor(cont_i, dtype=torch.long, device=self.device)
                    picked = logprobs_i[0, -len(cont_i) :].gather(-1, target[:, None])
                    answer = (float(picked.sum()), bool((greedy[0, -len(cont_i) :] == target).all()))
                    results.append(answer)
                    if req_str_i is not None:
                        self.cache_hook.add_partial("loglikelihood", req_str_i, answer)
                    pbar.update(1)
        pbar.close()
        return collator.get_original(results)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Total log-likelihood of each text, in disjoint windows of at most ``seq_len`` predicted tokens
        (each window conditioned on the token before it; the first on EOS)."""
        windows: list[tuple[None, list[int], list[int]]] = []
        owner: list[int] = []
        for i, (text,) in enumerate(req.args for req in requests):
            pairs = get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for ctx, cont in map(make_disjoint_window, pairs):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        if windows:
            for i, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
                totals[i] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------------------------------ generation

    def _gen_settings(self, gen_kwargs: dict) -> tuple[tuple[str, ...], int, float]:
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if unknown:
            raise ConfigError(
                f"{MODEL_NAME}: unsupported generation settings {unknown}; supported: {', '.join(GEN_KWARGS)}"
            )
        until = gen_kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(until)
        max_gen_toks = _int_arg("max_gen_toks", gen_kwargs.get("max_gen_toks", self.max_gen_toks))
        temperature = float(gen_kwargs.get("temperature") or 0.0) if gen_kwargs.get("do_sample") else 0.0
        return until, max_gen_toks, temperature

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or, with ``do_sample`` and a temperature, sampled) continuations, cut at ``until``."""
        prompts = []
        for context, gen_kwargs in (req.args for req in requests):
            ids = self.tok_encode(context)[-self.max_length :] or [self.prefix_token_id]
            prompts.append((ids, self._gen_settings(dict(gen_kwargs))))
        # Batch only prompts of equal length and settings (no padding, see the module docstring); longest
        # first so that an out-of-memory error shows up at once.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (ids, settings) in enumerate(prompts):
            groups[(len(ids), settings)].append(i)
        out: list[str | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        for (_, (until, max_gen_toks, temperature)), members in sorted(
            groups.items(), key=lambda g: -g[0][0]
        ):
            for start in range(0, len(members), self.batch_size):
                idx = members[start : start + self.batch_size]
                texts = self._generate([prompts[i][0] for i in idx], until, max_gen_toks, temperature)
                for i, text in zip(idx, texts, strict=True):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                pbar.update(len(idx))
        pbar.close()
        return out  # type: ignore[return-value]

    def _decoder_for(self, max_new: int) -> Decoder:
        """The static decoding cache every generate_until batch shares: ``batch_size`` rows of up to
        ``seq_len + max_new`` tokens, made again only for a longer ``max_new``. On CUDA its step is captured
        once as a CUDA graph (about a second) and replayed: at 1.3B a replayed step takes ~4 ms where the
        eager one takes ~32 ms (results/bench/decode-*.json), and GSM8K's 256-token answers cost 4.8 s each
        eagerly (results/cluster-example/). Replay gives the eager step's numbers (tests/test_gpu.py)."""
        max_len = self.max_length + max_new
        if self._decoder is None or self._decoder.cache.max_len < max_len:
            self._decoder = None  # free the old cache before the new one is allocated
            self._decoder = Decoder(
                self.model, self.batch_size, max_len, cuda_graphs=self.device.type == "cuda"
            )
        return self._decoder

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], until: tuple[str, ...], max_new: int, temperature: float):
        """Decode a batch of equal-length prompts with the shared static cache (the loop of
        HybridLM.generate, plus per-row stop strings). A batch smaller than ``batch_size`` fills the cache's
        other rows with copies of its first prompt, whose tokens are dropped: rows never mix (every layer
        is per row), and decoding time hardly depends on the row count (it reads the weights once a step)."""
        rows = prompts + [prompts[0]] * (self.batch_size - len(prompts))
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        decoder = self._decoder_for(max_new)
        decoder.reset()
        logits = decoder.prefill(ids)
        generator = torch.Generator(device=self.device).manual_seed(self.seed) if temperature > 0 else None
        new: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        for _ in range(max_new):
            token = next_token(logits, temperature, generator)
            for row, tok in enumerate(token[: len(prompts)].tolist()):
                if done[row]:
                    continue
                if tok == self.eot_token_id:
                    done[row] = True
                    continue
                new[row].append(tok)
                if until and any(stop in self.tok_decode(new[row]) for stop in until):
                    done[row] = True
            if all(done):
                break
            logits = decoder.step(token)
        texts = []
        for row in new:
            text = self.tok_decode(row)
            for stop in until:
                text = text.split(stop)[0]
            texts.append(text)
        return texts


def name_results_folder(argv: list[str]) -> list[str]:
    """``run_dir=RUN`` in ``--model_args`` becomes ``pretrained=RUN``: lm-eval names the results folder after
    ``pretrained`` (and gives it a random name when there is none)."""
    out, in_model_args = [], False
    for arg in argv:
        if arg.startswith("-"):
            in_model_args = arg in ("--model_args", "-a")
            if arg.startswith("--model_args="):
                key, _, value = arg.partition("=")
                arg = f"{key}={_rename_run_dir(value)}"
        elif in_model_args:
            arg = _rename_run_dir(arg)
        out.append(arg)
    return out


def _rename_run_dir(text: str) -> str:
    parts = text.split(",")
    if any(p.strip().startswith("pretrained=") for p in parts):
        return text
    return ",".join(
        "pretrained=" + p.strip()[len("run_dir=") :] if p.strip().startswith("run_dir=") else p for p in parts
    )


class _CountOverrides(logging.Filter):
    """Holds back lm-eval's "Task X from <our copy> overrides existing task from <its own>" warnings (73 for
    the offline copies, one per task and group) and counts them: replacing lm-eval's tasks is the point of
    the include path, said once instead."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "overrides existing task" in record.getMessage():
            self.count += 1
            return False
        return True


def _harness_commit() -> str | None:
    """The commit a result records as lm-eval's ``git_hash``: the harness's own (lm-eval would run ``git
    describe`` in the working directory, printing git's "fatal: not a git repository" outside one)."""
    return source_commit()["commit"]


def with_offline_tasks(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with ``--include_path`` pointing at the local task copies (evals/benchmark_data.py) when
    offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or the hub out of reach) and the user gave none;
    and that path (None when nothing was added)."""
    from evals.benchmark_data import lm_eval_task_dir, resolve_offline

    if any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        return argv, None
    if not resolve_offline(None) or not lm_eval_task_dir().is_dir():
        return argv, None
    path = str(lm_eval_task_dir())
    return [*argv, "--include_path", path], path


def cli_main(argv: list[str] | None = None) -> int:
    """lm-eval's command line with ``jamba-ablate`` registered (``ablate lm-eval ...``, or ``python -m
    evals.lm_eval_model ...``): lm-eval's own flags and output layout; offline, the local task copies are
    included, their replacement of lm-eval's tasks said in one line. A configuration mistake (a bad model
    argument, a run directory without checkpoints) is one line on stderr and exit status 2."""
    import lm_eval.evaluator
    from lm_eval.__main__ import cli_evaluate

    args, included = with_offline_tasks(name_results_folder(list(sys.argv[1:] if argv is None else argv)))
    quiet = _CountOverrides()
    logging.getLogger("lm_eval.tasks._index").addFilter(quiet)
    logging.getLogger("lm_eval.api.task").addFilter(_METADATA_HINT_FILTER)
    lm_eval.evaluator.get_git_commit_hash = _harness_commit
    sys.argv = [sys.argv[0], *args]
    try:
        cli_evaluate()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger("lm_eval.tasks._index").removeFilter(quiet)
    if included:
        print(f"offline: lm-eval's tasks read their local copies ({included}; {quiet.count} replaced)")
    return 0


if __name__ == "__main__":
    # Run as a script this module is ``__main__``; alias it so that a later ``import evals.lm_eval_model``
    # finds this copy instead of executing the file again and registering the model a second time.
    sys.modules.setdefault("evals.lm_eval_model", sys.modules[__name__])
    sys.exit(cli_main())
