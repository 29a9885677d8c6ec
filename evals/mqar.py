"""Recall accuracy of a run trained on synthetic multi-query associative recall (``data.train: [{name:
mqar, ...}]``), per ``(sequence length, key-value pairs)`` task: the small-scale mechanism behind the
paper's Table 6 (attention and hybrids solve MQAR where pure Mamba degrades as the keys grow; Zoology,
Arora et al. 2023).

Sequences come from the training generator (:mod:`harness.data.mqar`) on its ``test`` stream, which is
independent of the run's train and validation streams; with the same ``seed`` every arm of a sweep is scored
on the very same sequences. By default the tasks are the run's training tasks; ``num_pairs`` and/or
``seq_lens`` score a grid instead (e.g. more pairs than trained on), with the run's vocabulary, gap law and
answer format. Accuracy is zoology's: the argmax over the whole vocabulary at each query position equals the
key's value. Also reported: accuracy among the sequence's own values (chance ``1 / num_pairs``) and the
answers' cross-entropy. ``limit`` is the number of sequences per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from evals.options import MqarOptions
from harness.config_errors import ConfigError
from harness.data import mqar
from harness.data.config import MQARConfig
from harness.training.loading import LoadedRun

PREFIX = "mqar_recall"  # metric names; the induction suite's probe already reports "mqar/..."


def eval_tasks(
    loaded: LoadedRun,
    num_pairs: list[int] | None = None,
    seq_lens: list[int] | None = None,
    listed: list[list[int]] | None = None,
) -> tuple[list[mqar.MQARTask], set[mqar.MQARTask], str]:
    """The tasks to score, the subset the run trained on, and where the tasks came from."""
    cfg, tok = loaded.config, loaded.tokenizer
    trained_specs = [s.mqar for s in cfg.data.train if s.is_mqar]
    trained: set[mqar.MQARTask] = set()
    if trained_specs:
        tasks = mqar.run_tasks(cfg.data, seq_len=loaded.seq_len, vocab_size=tok.vocab_size, eos=tok.eos_id)
        trained = {t for t, _ in tasks}
    if listed is not None:
        return _listed_tasks(loaded, listed, trained_specs), trained, "options (tasks)"
    if num_pairs is None and seq_lens is None:
        if not trained_specs:
            raise ConfigError(
                f"mqar: {loaded.run.root} did not train on mqar (data.train has no 'mqar' corpus); give "
                "num_pairs (and seq_lens) to score it on a grid"
            )
        return [t for t, _ in tasks], trained, "the run's data.train"
    base = trained_specs[0] if trained_specs else MQARConfig(num_pairs=1)
    if seq_lens is None:
        seq_lens = sorted({t.seq_len for t in trained}) or [loaded.seq_len]
    if num_pairs is None:
        num_pairs = sorted({t.num_pairs for t in trained})
    grid = MQARConfig(
        num_pairs=num_pairs,
        seq_lens=seq_lens,
        vocab=base.vocab,
        power_a=base.power_a,
        answers_in_input=base.answers_in_input,
        filler=base.filler,
    )
    tasks = mqar.resolve_tasks(
        grid, seq_len=loaded.seq_len, vocab_size=tok.vocab_size, eos=tok.eos_id, where="mqar."
    )
    return tasks, trained, "options (num_pairs / seq_lens)"


def _listed_tasks(loaded: LoadedRun, listed: list[list[int]], trained_specs: list) -> list[mqar.MQARTask]:
    """The ``tasks`` option's (seq_len, num_pairs) pairs with the run's vocabulary, gap law, filler and answer
    format; a length past the trained context is allowed unless learned positions bound the model's."""
    tok, base = loaded.tokenizer, trained_specs[0] if trained_specs else MQARConfig(num_pairs=1)
    longest = max(length for length, _ in listed)
    loaded.check_positions(longest, "task length", "mqar.tasks")
    out = []
    for length, pairs in listed:
        spec = MQARConfig(
            num_pairs=[pairs],
            seq_lens=[length],
            vocab=base.vocab,
            power_a=base.power_a,
            answers_in_input=base.answers_in_input,
            filler=base.filler,
        )
        out += mqar.resolve_tasks(
            spec,
            seq_len=max(longest, loaded.seq_len),
            vocab_size=tok.vocab_size,
            eos=tok.eos_id,
            where="mqar.",
        )
    return out


@dataclass
class RecallTally:
    """Associative-recall answers scored three ways, batch by batch (this suite's and the induction suite's
    MQAR probe): the argmax over the whole vocabulary is the value (zoology's accuracy), the argmax among
    the sequence's own values is (chance 1 / pairs), and the answers' cross-entropy."""

    hits: int = 0
    value_hits: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)

    def add(self, logits: torch.Tensor, answers: torch.Tensor, values: torch.Tensor) -> None:
        """``logits`` (b, k, vocab) at the k query positions, ``answers`` (b, k), ``values`` (b, k)."""
        k = answers.shape[1]
        self.hits += int((logits.argmax(-1) == answers).sum())
        among = torch.gather(logits, 2, values[:, None, :].expand(-1, k, -1)).argmax(-1)
        self.value_hits += int((torch.gather(values, 1, among) == answers).sum())
        self.losses.append(F.cross_entropy(logits.transpose(1, 2), answers, reduction="none").cpu())

    def result(self, sequences: int, num_pairs: int) -> dict:
        queries = sequences * num_pairs
        return {
            "sequences": sequences,
            "num_pairs": num_pairs,
            "queries": queries,
            "accuracy": self.hits / queries,
            "accuracy_among_values": self.value_hits / queries,
            "chance_among_values": 1 / num_pairs,
            "answer_loss": float(torch.cat(self.losses).mean()),
        }


@torch.no_grad()
def task_accuracy(loaded: LoadedRun, task: mqar.MQARTask, *, n: int, seed: int, batch_size: int) -> dict:
    """Accuracy on ``n`` test-stream sequences of ``task``."""
    k = task.num_pairs
    tally = RecallTally()
    for start in range(0, n, batch_size):
        inputs, targets = mqar.batch(task, min(batch_size, n - start), seed=seed, stream="test", start=start)
        inputs, targets = inputs.to(loaded.device), targets.to(loaded.device)
        logits = loaded.model(inputs).logits.float()
        mask = targets != mqar.IGNORE  # exactly k answers per row
        at = logits[mask].view(len(inputs), k, -1)  # (b, k, vocab), queries in position order
        tally.add(at, targets[mask].view(len(inputs), k), inputs[:, 1 : 2 * k : 2])
    return {"task": task.name, "seq_len": task.seq_len, **tally.result(n, k)}


def run(loaded: LoadedRun, options: MqarOptions) -> dict:
    """Score every task (see the module docstring); returns the JSON-able payload."""
    n, seed, batch_size = options.limit, options.seed, options.batch_size
    tasks, trained, source = eval_tasks(loaded, options.num_pairs, options.seq_lens, options.tasks)
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        rows = [
            {**task_accuracy(loaded, t, n=n, seed=seed, batch_size=batch_size), "trained": t in trained}
            for t in tasks
        ]
    finally:
        loaded.model.train(was_training)
    accs = [r["accuracy"] for r in rows]
    metrics = {
        f"{PREFIX}/accuracy": sum(accs) / len(accs),
        f"{PREFIX}/min_accuracy": min(accs),
        **{f"{PREFIX}/{r['task']}": r["accuracy"] for r in rows},
    }
    first = tasks[0]
    return {
        "metrics": metrics,
        "tasks": rows,
        "settings": {
            "sequences_per_task": n,
            "seed": seed,
            "stream": "test (independent of the run's train and validation streams)",
            "tasks_from": source,
            "context": loaded.seq_len,
            "vocab": first.vocab,
            "eos_id": first.eos,
            "power_a": first.power_a,
            "answers_in_input": first.answers_in_input,
            "filler": first.filler,
            "generator_format": mqar.MQAR_FORMAT,
            "batch_size": batch_size,
            "accuracy": "argmax over the whole vocabulary at each query position equals the key's value",
        },
    }


def summarize(payload: dict) -> list[str]:
    lines = []
    for r in payload["tasks"]:
        lines.append(
            f"mqar {r['task']:<11} accuracy {r['accuracy']:.3f}  "
            f"among values {r['accuracy_among_values']:.3f} (chance {r['chance_among_values']:.3f})  "
            f"answer loss {r['answer_loss']:.3f}  "
            f"{'trained' if r['trained'] else 'not trained'}, {r['sequences']} seqs"
        )
    m = payload["metrics"]
    lines.append(
        f"mqar mean accuracy {m[f'{PREFIX}/accuracy']:.3f}, worst task {m[f'{PREFIX}/min_accuracy']:.3f} "
        f"({len(payload['tasks'])} tasks, seed {payload['settings']['seed']})"
    )
    return lines
