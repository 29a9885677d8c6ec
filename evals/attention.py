"""Per-head attention analysis: the paper's Fig. 7 (an induction head in the hybrid) as numbers per head.

For every attention layer and head, on the model's own attention probabilities (``return_attentions=True``,
the explicit softmax path, identical outputs to the fused one):

* ``induction_score`` (prefix matching, Olsson et al. 2022): on EOS + random tokens + the same tokens again,
  the mean attention from each token of the second copy to the token right after that token's earlier
  occurrence (1.0 for a perfect induction head; chance is about 1 / position);
* ``previous_token_score``: mean attention to the immediately preceding token (the other half of the
  induction circuit);
* ``recall_score`` (runs trained on MQAR): on the run's MQAR test sequences, the mean attention from each
  query (a key asked again) to its answer position, the token right after that key in the context (its
  value), as an induction head would look up the answer; ``recall_key_score`` is the mass on the key itself.
  Chance is about 1 / query position. Together they answer Fig. 7's question on synthetic data: which head
  of which layer does the recall;
* ``label_attention``: on few-shot IMDB prompts (the icl suite's format), the attention mass from the final
  ":" (where the model should output the label) to the tokens of the demonstrations' label words, the
  pattern the paper shows in Fig. 7; ``label_attention_lift`` divides it by the mass uniform attention
  would give those tokens.

Heads are named by block index (position in the pattern string) and by layer (the number of mixers before
it, the paper's layer numbering: attention at layer 4 of the 1:7 block). A few example maps are written to
``evals/attention_maps.npz`` next to the result; the JSON alone holds every score. Without the imdb corpus
(no pack offline) the label scores are null with the reason, and the induction scores still stand. A model
without attention (pure Mamba) gets an explicit empty result with the reason.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from evals.icl import PromptFormat, imdb_prompts
from evals.options import AttentionOptions, ImdbPromptOptions
from evals.probes import repeated_sequences
from evals.results import ARRAYS_KEY
from harness.config_errors import ConfigError
from harness.data import mqar
from harness.data.sources import DataUnavailableError
from harness.training.loading import LoadedRun


def attention_blocks(pattern: str) -> list[tuple[int, int]]:
    """(block index, layer index) of every attention block; the layer counts the mixers before it."""
    out, mixers = [], 0
    for i, symbol in enumerate(pattern):
        if symbol == "*":
            out.append((i, mixers))
        if symbol in "*M":
            mixers += 1
    return out


@torch.no_grad()
def attention_maps(loaded: LoadedRun, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Block index -> (batch, heads, t, t) attention probabilities for the sequences ``ids`` (on the CPU)."""
    out = loaded.model(ids.to(loaded.device), return_attentions=True)
    return {block: probs.float().cpu() for block, probs in out.attentions.items()}


def head_scores(probs: torch.Tensor, half_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads,) induction and previous-token scores from (batch, heads, t, t) attention probabilities of
    EOS + x + x sequences (``t = 1 + 2 * half_len``), averaged over the batch."""
    t = probs.shape[-1]
    if t != 1 + 2 * half_len:
        raise ValueError(f"attention maps of {t} positions do not match half_len {half_len}")
    # Query 1 + half_len + i (token x_i of the second copy) -> key 2 + i (what followed x_i the first time).
    queries = 1 + half_len + torch.arange(half_len)
    induction = probs[:, :, queries, queries - half_len + 1].mean((0, 2))
    previous = probs[:, :, torch.arange(1, t), torch.arange(t - 1)].mean((0, 2))
    return induction, previous


def prefix_matching_scores(
    loaded: LoadedRun, n: int, half_len: int, seed: int, batch_size: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per block: (heads,) induction scores and previous-token scores."""
    tok = loaded.tokenizer
    seqs, _ = repeated_sequences(n, half_len, tok.vocab_size, tok.eos_id, seed)
    induction: dict[int, torch.Tensor] = {}
    previous: dict[int, torch.Tensor] = {}
    for start in range(0, n, batch_size):
        maps = attention_maps(loaded, seqs[start : start + batch_size])
        for block, probs in maps.items():  # (b, h, t, t)
            ind, prev = head_scores(probs, half_len)
            induction[block] = induction.get(block, 0) + ind * len(probs)
            previous[block] = previous.get(block, 0) + prev * len(probs)
    return {b: v / n for b, v in induction.items()}, {b: v / n for b, v in previous.items()}


def recall_sequences(loaded: LoadedRun, n: int, seed: int) -> tuple[torch.Tensor, list, list[str]] | None:
    """``n`` MQAR test sequences of each task the run trained on, as (ids, [(rows, query positions, key
    positions)], task names); None for a run that did not train on MQAR."""
    cfg, tok = loaded.config, loaded.tokenizer
    if not any(s.is_mqar for s in cfg.data.train):
        return None
    tasks = mqar.run_tasks(cfg.data, seq_len=loaded.seq_len, vocab_size=tok.vocab_size, eos=tok.eos_id)
    rows, where, names = [], [], []
    for task, _ in tasks:
        inputs, targets = mqar.batch(task, n, seed=seed, stream="test")
        for seq, tgt in zip(inputs, targets, strict=True):
            queries = torch.nonzero(tgt != mqar.IGNORE).flatten()
            # The queried key sits at pair position 2i of the context (keys are distinct): find i.
            context = seq[: 2 * task.num_pairs : 2]
            pair = (context[None, :] == seq[queries][:, None]).int().argmax(1)
            rows.append(seq)
            where.append((queries, 2 * pair))
        names.append(task.name)
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), where, names


def recall_scores(
    loaded: LoadedRun, n: int, seed: int, batch_size: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict] | None:
    """Per block: (heads,) mean attention from each MQAR query to its answer position (the key's value in
    the context) and to the key itself, over every query of ``n`` test sequences per trained task; None for
    a run not trained on MQAR."""
    found = recall_sequences(loaded, n, seed)
    if found is None:
        return None
    ids, where, names = found
    answer: dict[int, torch.Tensor] = {}
    key: dict[int, torch.Tensor] = {}
    for start in range(0, len(ids), batch_size):
        maps = attention_maps(loaded, ids[start : start + batch_size])
        for block, probs in maps.items():  # (b, h, t, t)
            for r, (queries, keys) in enumerate(where[start : start + batch_size]):
                a = probs[r][:, queries, keys + 1].mean(-1)
                k = probs[r][:, queries, keys].mean(-1)
                answer[block] = answer.get(block, 0) + a
                key[block] = key.get(block, 0) + k
    total = len(ids)
    settings = {"tasks": names, "sequences_per_task": n, "stream": "test", "seed": seed}
    return {b: v / total for b, v in answer.items()}, {b: v / total for b, v in key.items()}, settings


def example_maps(
    loaded: LoadedRun, options: AttentionOptions, shots: int
) -> tuple[dict[str, np.ndarray], int]:
    """Full attention maps of two short examples, for figures: a repeated random sequence of
    ``example_half_len`` tokens (the induction stripe) and a few-shot IMDB prompt of up to ``shots``
    reviews cut to ``example_review_tokens`` (the Fig. 7 view), and the shots that fitted. Short, so that
    the maps stay small whatever the context (a 1024-token map of 8 heads is 16 MB per block); the scores
    above use the full lengths."""
    tok = loaded.tokenizer
    half = min(options.example_half_len, (loaded.seq_len - 1) // 2)
    ids, _ = repeated_sequences(1, half, tok.vocab_size, tok.eos_id, options.seed)
    arrays = {"induction_tokens": ids[0].numpy()}
    for block, probs in attention_maps(loaded, ids).items():
        arrays[f"induction_block{block}"] = probs[0].numpy().astype(np.float16)
    if shots:  # as many shots as fit, up to ``shots``
        short = dataclasses.replace(
            options, shots=None, max_shots=shots, max_review_tokens=options.example_review_tokens
        )
        builder, prompts = imdb_prompts(loaded, 2, short, seed=options.seed)
        shots = builder.shots
    if shots:
        arrays["imdb_tokens"] = np.asarray(prompts[0].ids)
        for block, probs in attention_maps(loaded, torch.tensor([prompts[0].ids])).items():
            arrays[f"imdb_block{block}"] = probs[0].numpy().astype(np.float16)
    recall = recall_sequences(loaded, 1, options.seed)
    if recall is not None:  # one MQAR sequence of the first trained task, with its queries and keys
        ids, where, _ = recall
        arrays["mqar_tokens"] = ids[0].numpy()
        arrays["mqar_queries"], arrays["mqar_keys"] = where[0][0].numpy(), where[0][1].numpy()
        for block, probs in attention_maps(loaded, ids[:1]).items():
            arrays[f"mqar_block{block}"] = probs[0].numpy().astype(np.float16)
    return arrays, shots


def label_attention_scores(
    loaded: LoadedRun, n: int, seed: int, prompt: ImdbPromptOptions
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict]:
    """Per block: (heads,) attention mass from the final ':' to the demonstrations' label tokens, its lift
    over uniform attention, and the prompt settings."""
    fmt = PromptFormat.of(prompt)
    builder, prompts = imdb_prompts(loaded, n, prompt, seed=seed)
    if builder.shots == 0:
        raise ConfigError(
            "attention: the IMDB prompts have no demonstrations (0 shots fit); lower max_review_tokens"
        )
    mass: dict[int, torch.Tensor] = {}
    lift: dict[int, torch.Tensor] = {}
    backend = loaded.tokenizer.backend
    for prompt in prompts:
        offsets = backend.encode(prompt.text, add_special_tokens=False).offsets
        # Token j of the text is position j + 1 of the input (after the EOS/BOS token).
        label_positions = [
            j + 1
            for j, (a, b) in enumerate(offsets)
            if any(a < hi and b > lo for lo, hi in prompt.label_spans)
        ]
        maps = attention_maps(loaded, torch.tensor([prompt.ids]))
        final = len(prompt.ids) - 1
        uniform = len(label_positions) / (final + 1)
        for block, probs in maps.items():
            m = probs[0, :, final, label_positions].sum(-1)  # (heads,)
            mass[block] = mass.get(block, 0) + m
            lift[block] = lift.get(block, 0) + m / uniform
    settings = {
        "prompts": len(prompts),
        "shots": builder.shots,
        "max_review_tokens": builder.max_review_tokens,
        "template": fmt.template,
        "target_delimiter": fmt.target_delimiter,
        "separator": fmt.separator,
        "labels": list(fmt.labels),
        "final_token": loaded.tokenizer.decode(prompts[0].ids[-1:]),
    }
    n = len(prompts)
    return (
        {b: v / n for b, v in mass.items()},
        {b: v / n for b, v in lift.items()},
        settings,
    )


def run(loaded: LoadedRun, options: AttentionOptions) -> dict:
    """The ``attention`` suite: per-head induction, previous-token and label-attention scores."""
    o = options
    blocks = attention_blocks(loaded.model.cfg.pattern)
    if not blocks:
        return {
            "status": "no attention layers",
            "reason": f"pattern {loaded.model.cfg.pattern} has no attention ('*') blocks, so there are no "
            "attention heads to analyse (pure Mamba)",
            "heads": [],
            "metrics": {},
        }
    n = o.limit
    context = loaded.seq_len
    half_len = o.half_len or (context - 1) // 2
    if not 2 <= half_len <= (context - 1) // 2:
        raise ConfigError(f"attention: half_len must be in [2, {(context - 1) // 2}], got {half_len}")
    induction, previous = prefix_matching_scores(loaded, n, half_len, o.seed, o.batch_size)
    try:
        label_mass, label_lift, icl_settings = label_attention_scores(loaded, n, o.seed, o)
    except (DataUnavailableError, ConfigError) as e:
        # No imdb corpus here, or (with default prompt settings) a context too short for a few-shot
        # prompt: the induction scores still stand. Settings the user chose are still checked strictly.
        if o.prompt_settings_changed():
            raise
        label_mass, label_lift = {}, {}
        icl_settings = {"status": "unavailable", "reason": str(e)}
    recall = recall_scores(loaded, n, o.seed, o.batch_size)
    heads = []
    for block, layer in blocks:
        for h in range(len(induction[block])):
            heads.append(
                {
                    "block": block,
                    "layer": layer,
                    "head": h,
                    "induction_score": float(induction[block][h]),
                    "previous_token_score": float(previous[block][h]),
                    "label_attention": float(label_mass[block][h]) if label_mass else None,
                    "label_attention_lift": float(label_lift[block][h]) if label_lift else None,
                    "recall_score": float(recall[0][block][h]) if recall else None,
                    "recall_key_score": float(recall[1][block][h]) if recall else None,
                }
            )
    metrics = {
        "induction_score_max": max(h["induction_score"] for h in heads),
        "induction_score_mean": sum(h["induction_score"] for h in heads) / len(heads),
        "previous_token_score_max": max(h["previous_token_score"] for h in heads),
    }
    if label_mass:
        metrics["label_attention_max"] = max(h["label_attention"] for h in heads)
        metrics["label_attention_lift_max"] = max(h["label_attention_lift"] for h in heads)
    if recall:
        metrics["recall_score_max"] = max(h["recall_score"] for h in heads)
    payload = {
        "status": "ok",
        "heads": heads,
        "attention_blocks": [b for b, _ in blocks],
        "attention_layers": [layer for _, layer in blocks],
        "n_heads": len(heads),
        "metrics": metrics,
        "settings": {
            "sequences": n,
            "seed": o.seed,
            "half_len": half_len,
            "induction_chance": "about 1 / query position (uniform causal attention)",
            "imdb": icl_settings,
            "recall": recall[2] if recall else {"status": "not trained on mqar"},
        },
    }
    if o.save_maps:  # saved beside the result by evals.runner
        shots = min(4, icl_settings.get("shots") or 0)
        payload[ARRAYS_KEY], shots = example_maps(loaded, o, shots)
        payload["settings"]["example_maps"] = {
            "induction_half_len": min(o.example_half_len, (context - 1) // 2),
            "imdb_shots": shots,
            "imdb_review_tokens": o.example_review_tokens,
        }
    return payload


def summarize(payload: dict) -> list[str]:
    if payload.get("status") != "ok":
        return [f"{payload.get('status')}: {payload.get('reason')}"]
    lines = [f"{payload['n_heads']} heads in layers {payload['attention_layers']}"]
    for h in sorted(payload["heads"], key=lambda h: -h["induction_score"])[:8]:
        label = (
            f"label attention {h['label_attention']:.3f} (x{h['label_attention_lift']:.2f} uniform)"
            if h["label_attention"] is not None
            else "label attention unavailable"
        )
        recall = f"  recall {h['recall_score']:.3f}" if h.get("recall_score") is not None else ""
        lines.append(
            f"  layer {h['layer']:>2} head {h['head']:>2}: induction {h['induction_score']:.3f}  "
            f"prev-token {h['previous_token_score']:.3f}  {label}{recall}"
        )
    return lines
