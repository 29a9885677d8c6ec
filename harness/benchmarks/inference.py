"""Inference speed and memory per arm: prefill throughput, batched decoding, the longest context that fits.

These are the Jamba paper's Figs 2-3 axes for our own hybrids. Models are randomly initialised (speed and
memory do not depend on the weights), bf16 on CUDA and fp32 elsewhere, and every figure sits beside what
:mod:`harness.accounting` predicts for the same shape.

    ablate bench prefill --preset mini-1to7 --context 8k,32k,128k --batch 1 --against transformers,llama
    ablate bench decode --preset mini-1to7 --batch 1,16 --prompt 2048 --new 256 --cuda-graphs
    ablate bench context --preset mini-1to7

* **prefill**: tokens/s of one forward pass that fills a static cache of exactly the context, with only the
  last position's logits (what generation needs); peak allocator memory (CUDA) beside the accounting's
  KV-cache and Mamba-state bytes. ``--against`` times anchors built from the same preset by
  :mod:`harness.benchmarks.train`'s builders (transformers' Jamba holding our weights; a Llama of our active
  size; mamba_ssm's own model of the same Mamba-1 or Mamba-2 layers) at the same contexts, one model on the
  device at a time, each prefill as generation's first call runs it (transformers: ``use_cache=True``,
  ``logits_to_keep=1``; mamba_ssm: fresh ``InferenceParams``, ``num_last_tokens=1``). Every row names its
  ``implementation``; an anchor that cannot run the layout or whose package is missing is listed in
  ``anchors`` with the reason.
* **decode**: :class:`harness.model.decode.Decoder`, prefill then ``new`` greedy steps, CUDA graphs on or off;
  tokens/s and ms per step per batch size. transformers' ``generate`` on the same weights
  (:func:`harness.hf_interop.to_hf_model`) is timed end to end beside it where transformers can run the
  layout, with the share of identical tokens and each row's first differing step; otherwise the reason is
  recorded.
* **context**: the longest batch-1 prefill that fits, found by doubling then bisecting, prefilled in chunks of
  :data:`CONTEXT_PREFILL_CHUNK` tokens by default (one pass with ``--prefill-chunk 0``). On CUDA "fits" means
  the prefill ran without an out-of-memory error (``--max-bytes`` caps the allocator below the device's
  memory). The CPU has no allocator limit to hit, so there the command refuses unless ``--max-bytes`` is
  given, and then a context fits when the weights plus the cache tensors actually allocated for it stay
  within the budget (transient activations are not counted): a check of the search and the cache sizing,
  not a memory measurement.

**Are the decoded tokens right?** Comparing free-running greedy sequences says little on random weights in
bf16: their logits are nearly flat, the top two are often equal after rounding, so two correct
implementations pick different argmaxes early and the sequences then diverge for good (the first H200
records show 2-9% identical tokens against transformers). So decode also checks each token against *our
own* uncached forward pass, teacher-forced (:func:`uncached_agreement`): one forward over the prompt and
the decoded tokens gives the uncached argmax for every step given exactly the decoder's prefix, so a flip
cannot cascade, and where they differ the logit margin says whether it was a near tie. That costs about
one prefill of ``prompt + new`` tokens per row (at 1.3b on an H200 well under a second per row), where
re-running the free greedy loop uncached would cost ``new`` such forwards. Recorded per row:
``tokens_equal_uncached_share``, ``first_divergence_uncached`` (per batch row, None when never),
``uncached_flip_margin_max`` and ``uncached_flips_beyond_near_tie`` (margins above :data:`NEAR_TIE_EPS`
machine epsilons of the top logit); against transformers, ``first_divergence_transformers`` beside
``tokens_equal_share``. In fp32 on the CPU every share is 1.0 (the tests check it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from harness.accounting import kv_cache_bytes, mamba_state_bytes
from harness.benchmarks.train import ANCHOR_BUILDERS, AnchorSkipped, llama_equivalent
from harness.config_errors import ConfigError
from harness.devices import synchronize
from harness.model import HybridLM
from harness.model.config import ModelConfig
from harness.model.decode import Decoder
from harness.presets import get_preset

SUFFIXES = {"k": 1024, "m": 1024 * 1024}
# A decoded token that is not the uncached argmax counts as a near tie within this many machine epsilons
# (of the weights' dtype) of the position's largest |logit|: cached and uncached kernels round differently.
NEAR_TIE_EPS = 8
PREFILL_ANCHORS = ("transformers", "llama", "mamba_ssm")

# The context search prefills in chunks of this many tokens, as serving engines do, so that what bounds the
# context is what the paper's Fig. 2 counts (weights, KV cache, Mamba state), not the transient activations
# of one pass over the whole prompt (~75 KB per token at 1.3B: a 1:7 hybrid measured 114,688 tokens in
# 12 GiB one-shot where its caches fit 1.6M). 8,192 tokens keep every kernel long enough to run at speed
# while a chunk's activations stay under about a GiB at 1.3B (~100 KiB per token in a Mamba layer).
CONTEXT_PREFILL_CHUNK = 8192


def parse_sizes(text: str) -> list[int]:
    """``"8k,32k,2048"`` -> [8192, 32768, 2048] (k = 1024, m = 1024**2)."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = SUFFIXES.get(part[-1:], 1)
        digits = part[:-1] if part[-1:] in SUFFIXES else part
        if not digits.isdigit() or int(digits) == 0:
            raise ConfigError(f"not a size: {part!r} (use whole numbers such as 2048, 8k or 1m)")
        sizes.append(int(digits) * scale)
    return sizes


def build_model(preset: str, device: torch.device, seed: int = 0) -> HybridLM:
    """A randomly initialised arm, in eval mode, bf16 on CUDA and fp32 elsewhere."""
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return HybridLM(get_preset(preset)).to(device, dtype).eval()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def _accounting(cfg: ModelConfig, module: nn.Module, context: int, batch: int) -> dict[str, int]:
    """Weights as held by ``module``, KV cache and Mamba state as :mod:`harness.accounting` sizes them for
    ``cfg`` at ``module``'s element size."""
    size = next(module.parameters()).element_size()
    return {
        "weights_bytes": sum(p.numel() * p.element_size() for p in module.parameters()),
        "kv_cache_bytes": kv_cache_bytes(cfg, context, batch, bytes_per_element=size),
        "mamba_state_bytes": mamba_state_bytes(cfg, batch, bytes_per_element=size),
    }


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(error)


@torch.no_grad()
def _prefill(model: HybridLM, ids: torch.Tensor, chunk: int | None = None) -> int:
    """One prefill into a fresh cache sized to the prompt, ``chunk`` tokens per pass (None: one pass);
    returns the cache tensors' bytes."""
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    model.prefill(ids, cache, chunk)
    return cache.kv_bytes() + cache.mamba_bytes()


def _prefill_rows(
    implementation: str,
    prefill: Callable[[torch.Tensor], int | None],
    accounting: Callable[[int], dict[str, int]],
    vocab_size: int,
    contexts: list[int],
    batch: int,
    device: torch.device,
    repeats: int,
) -> list[dict[str, Any]]:
    """Time ``prefill`` (which returns the cache tensors' bytes when it knows them) at each context: best
    of ``repeats`` after a warm-up, peak memory over the timed calls; a context that runs out of memory
    gets an ``error`` row and the next one is still tried."""
    rows = []
    for context in contexts:
        ids = torch.randint(0, vocab_size, (batch, context), device=device)
        row: dict[str, Any] = {
            "implementation": implementation,
            "context": context,
            "batch": batch,
            **accounting(context),
        }
        try:
            prefill(ids)  # warm-up: kernels, allocator
            _reset_peak(device)
            times = [_timed(lambda i=ids: prefill(i), device) for _ in range(repeats)]
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e):
                raise
            rows.append({**row, "error": "out of memory"})
            _reset_peak(device)
            continue
        seconds = min(t for t, _ in times)
        row.update(seconds=seconds, tokens_per_s=batch * context / seconds, peak_bytes=_peak(device))
        if times[0][1] is not None:
            row["cache_bytes_allocated"] = times[0][1]
        rows.append(row)
        print(
            f"{implementation} prefill batch {batch} x {context:>7}: {row['tokens_per_s']:>12,.0f} tok/s"
            + (f", peak {row['peak_bytes'] / 2**30:.2f} GiB" if row["peak_bytes"] is not None else "")
        )
    return rows


def _ours_prefill_rows(
    preset: str, contexts: list[int], batch: int, device: torch.device, repeats: int, chunk: int | None
) -> tuple[ModelConfig, torch.dtype, list[dict[str, Any]]]:
    """Our rows, with the preset's config and dtype; the model is freed on return."""
    model = build_model(preset, device)
    rows = _prefill_rows(
        "ours",
        lambda ids: _prefill(model, ids, chunk),
        lambda context: _accounting(model.cfg, model, context, batch),
        model.cfg.vocab_size,
        contexts,
        batch,
        device,
        repeats,
    )
    return model.cfg, model.embed_tokens.weight.dtype, rows


def _anchor_prefill(model: nn.Module) -> Callable[[torch.Tensor], None]:
    """A transformers model's prefill as generation's first call runs it: a fresh cache filled with the
    prompt (``use_cache=True``), logits of the last position only (``logits_to_keep=1``)."""

    @torch.no_grad()
    def prefill(ids: torch.Tensor) -> None:
        model(ids, use_cache=True, logits_to_keep=1)

    return prefill


def _mamba_ssm_prefill(model: nn.Module) -> Callable[[torch.Tensor], None]:
    """mamba_ssm's prefill as its ``generate`` runs it: fresh ``InferenceParams`` sized for the prompt (each
    layer allocates its conv and SSM state, or its KV cache, on first use and fills it), logits of the last
    position only (``num_last_tokens=1``)."""
    from mamba_ssm.utils.generation import InferenceParams

    @torch.no_grad()
    def prefill(ids: torch.Tensor) -> None:
        params = InferenceParams(max_seqlen=ids.shape[1], max_batch_size=ids.shape[0])
        model(ids, inference_params=params, num_last_tokens=1)

    return prefill


def run_prefill(
    preset: str,
    contexts: list[int],
    batch: int,
    device: torch.device,
    repeats: int = 3,
    against: Sequence[str] = (),
    chunk: int | None = None,
) -> dict[str, Any]:
    """Ours (``chunk`` tokens per prefill pass; None: one pass), then each anchor of ``against`` (built from
    the same preset, one model on the device at a time so each peak is its own; always one pass), at the
    same contexts; anchor rows carry ``ours_over`` (ours / theirs)."""
    unknown = [a for a in against if a not in PREFILL_ANCHORS]
    if unknown:
        raise ConfigError(
            f"unknown prefill anchor(s) {unknown}; choose from {', '.join(PREFILL_ANCHORS)}", key="against"
        )
    cfg, dtype, rows = _ours_prefill_rows(preset, contexts, batch, device, repeats, chunk)
    _reset_peak(device)  # our model is freed: an anchor's peak is its own
    ours = {r["context"]: r.get("tokens_per_s") for r in rows}
    anchors = []
    for name in against:
        try:
            contender = ANCHOR_BUILDERS[name](cfg, device, dtype, 0, max(contexts))
            anchor = contender.build().eval()
            anchor_cfg = llama_equivalent(cfg) if name == "llama" else cfg
            timed = _prefill_rows(
                name,
                _mamba_ssm_prefill(anchor) if name == "mamba_ssm" else _anchor_prefill(anchor),
                lambda context, m=anchor, c=anchor_cfg: _accounting(c, m, context, batch),
                cfg.vocab_size,
                contexts,
                batch,
                device,
                repeats,
            )
        except AnchorSkipped as e:
            anchors.append({"implementation": name, "skipped": str(e)})
        except (RuntimeError, ValueError, AssertionError) as e:  # the anchor's own failure
            anchors.append(
                {"implementation": name, "skipped": f"failed during its run: {type(e).__name__}: {e}"}
            )
        else:
            for row in timed:
                if row.get("tokens_per_s") and ours.get(row["context"]):
                    row["ours_over"] = ours[row["context"]] / row["tokens_per_s"]
            rows += timed
            anchors.append({"implementation": name, "label": contender.label, "settings": contender.settings})
        finally:
            anchor = None  # freed before the next anchor is built, so its peak is its own
            _reset_peak(device)
    for entry in anchors:
        if "skipped" in entry:
            print(f"{entry['implementation']} not timed: {entry['skipped']}")
    return {
        "dtype": str(dtype),
        "repeats": repeats,
        "prefill_chunk": chunk,
        "against": list(against),
        "anchors": anchors,
        "rows": rows,
    }


@torch.no_grad()
def _decode_ours(decoder: Decoder, ids: torch.Tensor, new: int, device: torch.device) -> dict[str, Any]:
    """Prefill, then ``new - 1`` timed greedy steps (the first new token comes from the prefill)."""
    decoder.reset()
    prefill_s, logits = _timed(lambda: decoder.prefill(ids), device)
    tokens = [logits.argmax(-1)]

    def steps() -> None:
        for _ in range(new - 1):
            tokens.append(decoder.step(tokens[-1]).argmax(-1))

    decode_s, _ = _timed(steps, device)
    return {"prefill_s": prefill_s, "decode_s": decode_s, "tokens": torch.stack(tokens, 1)}


def first_divergence(differs: torch.Tensor) -> list[int | None]:
    """Per row of a (batch, steps) mask of steps where two decodings differ, the first such step (0 is the
    token from the prefill; None: they never differ)."""
    return [int(row.nonzero()[0]) if row.any() else None for row in differs.cpu()]


@torch.no_grad()
def uncached_agreement(model: HybridLM, ids: torch.Tensor, tokens: torch.Tensor) -> dict[str, Any]:
    """Check decoded ``tokens`` (batch, new) against the uncached forward pass, teacher-forced.

    One forward without a cache over the prompt and every decoded token but the last gives, at each new
    position, the logits the uncached model assigns given exactly the prefix the decoder had; the decoder
    was right there when its token is their argmax. A row at a time, so the (tokens, vocab) logits of only
    one row exist at once. Where they differ, the margin (uncached logit of its argmax minus that of the
    decoded token) says whether it was a near tie: a flip within :data:`NEAR_TIE_EPS` machine epsilons of
    the top logit is rounding between the cached and uncached kernels, one beyond it is a bug.
    """
    prompt = ids.shape[1]
    full = torch.cat([ids, tokens[:, :-1]], 1)
    eps = torch.finfo(model.embed_tokens.weight.dtype).eps
    equal, margins, beyond = [], [], 0
    for row in range(ids.shape[0]):
        logits = model(full[row : row + 1]).logits[0, prompt - 1 :].float()
        ref = logits.argmax(-1)
        equal.append(ref == tokens[row])
        margin = logits.gather(-1, ref[:, None]) - logits.gather(-1, tokens[row, :, None])
        tolerance = NEAR_TIE_EPS * eps * logits.abs().amax(-1, keepdim=True)
        margins.append(margin[~equal[-1]])
        beyond += int((margin > tolerance).sum())
    flips = torch.cat(margins)
    return {
        "tokens_equal_uncached_share": float(torch.stack(equal).float().mean()),
        "first_divergence_uncached": first_divergence(~torch.stack(equal)),
        "uncached_flip_margin_max": float(flips.max()) if flips.numel() else 0.0,
        "uncached_flips_beyond_near_tie": beyond,
    }


def _hf_generate(model: HybridLM, device: torch.device) -> tuple[Callable | None, str | None]:
    """transformers' greedy ``generate`` on a copy of ``model``'s weights, or why it cannot run."""
    try:
        from harness.hf_interop import to_hf_model

        hf = to_hf_model(model, use_mamba_kernels=device.type == "cuda").eval()
    except (ConfigError, ImportError) as e:
        return None, str(e)

    def generate(ids: torch.Tensor, new: int) -> torch.Tensor:
        out = hf.generate(
            ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0
        )
        return out[:, ids.shape[1] :]

    return generate, None


def run_decode(
    preset: str,
    batches: list[int],
    prompt: int,
    new: int,
    device: torch.device,
    cuda_graphs: bool = True,
    compare_transformers: bool = True,
    check_uncached: bool = True,
) -> dict[str, Any]:
    if new < 2:
        raise ConfigError("--new must be at least 2 (the first new token comes from the prefill)")
    model = build_model(preset, device)
    hf_generate, hf_reason = _hf_generate(model, device) if compare_transformers else (None, "not asked")
    graphs = cuda_graphs and device.type == "cuda"
    rows = []
    for batch in batches:
        ids = torch.randint(0, model.cfg.vocab_size, (batch, prompt), device=device)
        setup_s, decoder = _timed(lambda b=batch: Decoder(model, b, prompt + new, cuda_graphs=graphs), device)
        _decode_ours(decoder, ids, min(new, 4), device)  # warm-up
        ours = _decode_ours(decoder, ids, new, device)
        row: dict[str, Any] = {
            "batch": batch,
            "prompt": prompt,
            "new": new,
            "setup_s": setup_s,
            "prefill_s": ours["prefill_s"],
            "decode_s": ours["decode_s"],
            "ms_per_step": ours["decode_s"] / (new - 1) * 1e3,
            "decode_tokens_per_s": batch * (new - 1) / ours["decode_s"],
            "end_to_end_tokens_per_s": batch * new / (ours["prefill_s"] + ours["decode_s"]),
            **_accounting(model.cfg, model, prompt + new, batch),
        }
        if hf_generate is not None:
            hf_generate(ids, min(new, 4))  # warm-up
            hf_s, hf_tokens = _timed(lambda i=ids: hf_generate(i, new), device)
            row["transformers_end_to_end_tokens_per_s"] = batch * new / hf_s
            row["speedup_vs_transformers"] = (
                row["end_to_end_tokens_per_s"] / row["transformers_end_to_end_tokens_per_s"]
            )
            row["tokens_equal_share"] = float((hf_tokens == ours["tokens"]).float().mean())
            row["first_divergence_transformers"] = first_divergence(hf_tokens != ours["tokens"])
        if check_uncached:
            row.update(uncached_agreement(model, ids, ours["tokens"]))
        rows.append(row)
        print(
            f"{preset} decode batch {batch:>3}, prompt {prompt}, {new} new: "
            f"{row['decode_tokens_per_s']:>10,.0f} tok/s, {row['ms_per_step']:.2f} ms/step"
            + (f", {row['speedup_vs_transformers']:.1f}x transformers" if hf_generate is not None else "")
        )
        del decoder
        _reset_peak(device)
    if hf_reason:
        print(f"transformers not timed: {hf_reason}")
    return {
        "dtype": str(model.embed_tokens.weight.dtype),
        "cuda_graphs": graphs,
        "transformers_skipped": hf_reason,
        "near_tie_eps": NEAR_TIE_EPS if check_uncached else None,
        "rows": rows,
    }


def predicted_max_context(model: HybridLM, budget: int) -> int | None:
    """The accounting's longest batch-1 context whose weights + KV cache + Mamba state fit ``budget`` bytes
    (None when the arm has no attention: no cache grows with the context)."""
    acc = _accounting(model.cfg, model, 1, 1)
    if acc["kv_cache_bytes"] == 0:
        return None
    return max(0, (budget - acc["weights_bytes"] - acc["mamba_state_bytes"]) // acc["kv_cache_bytes"])


def run_context(
    preset: str,
    device: torch.device,
    max_bytes: int | None = None,
    start: int = 1024,
    limit: int = 4 * 1024 * 1024,
    resolution: int = 1024,
    chunk: int | None = CONTEXT_PREFILL_CHUNK,
) -> dict[str, Any]:
    """Double from ``start`` until a prefill does not fit (or ``limit`` fits), then bisect to within
    ``resolution`` tokens. Each probe prefills ``chunk`` tokens per pass (None: the whole context in one)."""
    if device.type != "cuda" and max_bytes is None:
        raise ConfigError(
            "ablate bench context measures against the GPU's memory; on the CPU there is no allocator limit "
            "to hit: give --max-bytes to check the search against a budget, or run it on a CUDA device"
        )
    model = build_model(preset, device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        budget = min(max_bytes or total, total)
        torch.cuda.set_per_process_memory_fraction(budget / total, device)
        criterion = "the prefill ran without running out of CUDA memory"
    else:
        budget = max_bytes
        criterion = "weights + allocated cache tensors <= --max-bytes (CPU: activations not counted)"
    weights = _accounting(model.cfg, model, 1, 1)["weights_bytes"]
    probes: list[dict[str, Any]] = []

    def fits(context: int) -> bool:
        ids = torch.randint(0, model.cfg.vocab_size, (1, context), device=device)
        _reset_peak(device)
        try:
            cache_bytes = _prefill(model, ids, chunk)
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e):
                raise
            probes.append({"context": context, "fits": False})
            return False
        finally:
            del ids
        ok = device.type == "cuda" or weights + cache_bytes <= budget
        probes.append(
            {"context": context, "fits": ok, "peak_bytes": _peak(device), "cache_bytes": cache_bytes}
        )
        return ok

    good, bad = 0, None
    context = start
    while context <= limit:
        if not fits(context):
            bad = context
            break
        good, context = context, context * 2
    if bad is not None:
        while bad - good > resolution:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if fits(mid) else (good, mid)
    measured = good or None
    predicted = predicted_max_context(model, budget)
    found = measured if bad is not None else f">= {good} (the --limit)"
    print(
        f"{preset} longest batch-1 prefill within {budget / 2**30:.2f} GiB: {found} tokens; "
        f"accounting predicts {predicted}"
    )
    return {
        "dtype": str(model.embed_tokens.weight.dtype),
        "budget_bytes": budget,
        "criterion": criterion,
        "prefill_chunk": chunk,
        "max_context": measured,
        "hit_limit": bad is None,
        "limit": limit,
        "resolution": resolution,
        "predicted_max_context": predicted,
        "probes": probes,
    }
