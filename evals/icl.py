"""In-context learning tasks of the paper's Table 6: IMDB in the few-shot format, QuAC and NarrativeQA.

IMDB (Section 6, Table 6, Fig. 7). The point of the task is *format* in-context learning: pure Mamba at
1.3B scores 48.8 because it often answers off-format ("Very Good", "Funny", "3/10") rather than with the
"Positive"/"Negative" labels of the demonstrations. The paper publishes neither shots nor template, so both
are options here (saved in the payload) and three scores are reported:

* ``loglik_accuracy``: the label with the higher log-likelihood after the prompt (format-free: it asks
  only whether the model prefers the right label of the two);
* ``format_adherence``: share of greedy generations (decoded with the static cache) that start with
  exactly one of the label words;
* ``generation_accuracy``: greedy generations that start with the right label; off-format counts as
  wrong (the paper's scoring). The most frequent off-format answers are listed with their counts.

Demonstrations are real reviews from the ``imdb`` corpus's train split, queries come from its held-out
split (hub: ``stanfordnlp/imdb`` train/test; offline: the ``imdb`` pack's train/validation). Sampling is
deterministic from ``seed``; queries and each prompt's demonstrations are label-balanced. Reviews are long
(~300 tokens) and tiny models have small contexts, so each review is cut to ``max_review_tokens`` tokens and
the number of shots is the most that fit the training context (or the ``shots`` asked for, if they fit).

QuAC and NarrativeQA read the hub (``allenai/quac``, ``deepmind/narrativeqa``); no registry package ships
them, so offline they are reported as unavailable with the reason.
"""

from __future__ import annotations

import collections
import copy
import functools
import random
import re
import string
from dataclasses import dataclass

import torch

from evals.options import IMDB_TEMPLATE, IclOptions, ImdbPromptOptions
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec
from harness.data.sources import ResolvedSource, hub_offline, resolve
from harness.model.decode import Decoder
from harness.training.loading import LoadedRun

DEFAULT_SHOTS_TARGET = 4  # shots the automatic max_review_tokens leaves room for
MAX_AUTO_REVIEW_TOKENS = 400
TOKEN_MARGIN = 2  # tokens of slack per piece: BPE merges across piece boundaries can shift counts


# ---------------------------------------------------------------------------------------------- IMDB data


def clean_review(text: str) -> str:
    """One line of text: IMDB's ``<br />`` and newlines would break the template's line structure."""
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def read_labelled(split_role: str, loaded: LoadedRun, source: str = "auto") -> list[tuple[str, int]]:
    """(review, label) pairs of the imdb corpus for role 'train' or 'validation', in the corpus order."""
    return list(
        _read_labelled(resolve(CorpusSpec(name="imdb", source=source), split_role, loaded.config.data))
    )


@functools.lru_cache(maxsize=4)
def _read_labelled(src: ResolvedSource) -> tuple[tuple[str, int], ...]:
    """Cached per resolved source (its fingerprint covers the content), so the icl and attention suites of
    one ``ablate eval`` read the 25k reviews once."""
    rows = []
    for row in src.iter_rows():
        label = row.get("label")
        if label is None:
            raise ConfigError(f"corpus imdb ({src.describe()}) has no 'label' column; fields: {sorted(row)}")
        if int(label) in (0, 1) and row.get(src.text_field):
            rows.append((clean_review(row[src.text_field]), int(label)))
    if not rows:
        raise ConfigError(f"corpus imdb ({src.describe()}) has no labelled reviews")
    return tuple(rows)


def by_label(rows: list[tuple[str, int]]) -> dict[int, list[tuple[str, int]]]:
    return {lab: [r for r in rows if r[1] == lab] for lab in (0, 1)}


def balanced_sample(
    pool: dict[int, list[tuple[str, int]]], n: int, rng: random.Random
) -> list[tuple[str, int]]:
    """``n`` rows of ``pool`` (rows by label): half of each label, the odd one to a random label, shuffled."""
    first = rng.randrange(2)
    counts = {first: (n + 1) // 2, 1 - first: n // 2}
    out = []
    for lab, k in counts.items():
        if k > len(pool[lab]):
            raise ConfigError(f"imdb: asked for {k} reviews labelled {lab}, the split has {len(pool[lab])}")
        out.extend(rng.sample(pool[lab], k))
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------- prompts


@dataclass
class PromptFormat:
    """How a few-shot prompt is laid out (validated as :class:`evals.options.ImdbPromptOptions`)."""

    template: str = IMDB_TEMPLATE
    target_delimiter: str = " "
    separator: str = "\n\n"
    labels: tuple[str, ...] = ("Negative", "Positive")  # index = the IMDB label (0 negative, 1 positive)

    @classmethod
    def of(cls, prompt: ImdbPromptOptions) -> PromptFormat:
        return cls(prompt.template, prompt.target_delimiter, prompt.separator, tuple(prompt.labels))

    def demo(self, review: str, label: int) -> tuple[str, int]:
        """A demonstration's text and the character offset where its label word starts."""
        head = self.template.format(review=review) + self.target_delimiter
        return head + self.labels[label] + self.separator, len(head)

    def query(self, review: str) -> str:
        return self.template.format(review=review)


@dataclass
class Prompt:
    text: str
    ids: list[int]  # BOS (EOS token) + the encoded text
    label: int  # gold label of the query
    label_spans: list[tuple[int, int]]  # character spans of the demonstrations' label words
    shots: int


class PromptBuilder:
    """Truncates reviews, decides the number of shots that fits the context and builds prompts."""

    def __init__(
        self,
        loaded: LoadedRun,
        fmt: PromptFormat,
        *,
        shots: int | None,
        max_shots: int,
        max_review_tokens: int | None,
        answer_tokens: int,
    ):
        tok = loaded.tokenizer
        self.tok, self.fmt, self.context = tok, fmt, loaded.seq_len
        self.label_ids = [tok.encode(fmt.target_delimiter + lab) for lab in fmt.labels]
        self.answer_budget = max(answer_tokens, *(len(ids) for ids in self.label_ids))
        longest = max(range(2), key=lambda i: len(self.label_ids[i]))
        self.demo_overhead = len(tok.encode(fmt.demo("", longest)[0])) + TOKEN_MARGIN
        self.query_overhead = len(tok.encode(fmt.query(""))) + TOKEN_MARGIN
        room = self.context - 1 - self.answer_budget  # 1: the BOS token
        if max_review_tokens is None:
            target = shots if shots is not None else DEFAULT_SHOTS_TARGET
            per_review = (room - self.query_overhead - target * self.demo_overhead) // (target + 1)
            max_review_tokens = min(MAX_AUTO_REVIEW_TOKENS, per_review)
        if max_review_tokens < 1:
            raise ConfigError(
                f"icl: the context of {self.context} tokens leaves no room for a review (template overheads "
                f"{self.demo_overhead}/{self.query_overhead} tokens, answer {self.answer_budget}); use fewer "
                "shots or a shorter template"
            )
        self.max_review_tokens = max_review_tokens
        fit = (room - self.query_overhead - max_review_tokens) // (self.demo_overhead + max_review_tokens)
        if shots is None:
            shots = max(0, min(max_shots, fit))
        elif shots > fit:
            raise ConfigError(
                f"icl: {shots} shots of up to {max_review_tokens} tokens each do not fit the {self.context}-"
                f"token context (at most {max(fit, 0)} do); lower shots or max_review_tokens"
            )
        if shots < 0:
            raise ConfigError(f"icl: shots must be >= 0, got {shots}")
        self.shots = shots

    def truncate(self, reviews: list[str]) -> list[str]:
        """Each review cut to ``max_review_tokens`` tokens (decoded back to text; partial characters go)."""
        out = []
        for text, ids in zip(reviews, self.tok.encode_batch(reviews), strict=True):
            if len(ids) > self.max_review_tokens:
                text = self.tok.decode(ids[: self.max_review_tokens]).rstrip("\ufffd").rstrip()
            out.append(text)
        return out

    def build(self, demos: list[tuple[str, int]], query: tuple[str, int]) -> Prompt:
        """The prompt for ``query`` after ``demos`` (all already truncated)."""
        parts, spans, offset = [], [], 0
        for review, label in demos:
            text, at = self.fmt.demo(review, label)
            spans.append((offset + at, offset + at + len(self.fmt.labels[label])))
            parts.append(text)
            offset += len(text)
        parts.append(self.fmt.query(query[0]))
        text = "".join(parts)
        ids = [self.tok.eos_id, *self.tok.encode(text)]
        if len(ids) + self.answer_budget > self.context:  # the margins make this unreachable in practice
            raise RuntimeError(f"icl prompt of {len(ids)} tokens overflows the {self.context}-token context")
        return Prompt(text, ids, query[1], spans, len(demos))


def sample_prompts(
    builder: PromptBuilder,
    pool: dict[int, list[tuple[str, int]]],
    queries: list[tuple[str, int]],
    seed: int,
) -> list[Prompt]:
    """One prompt per query, each with its own label-balanced demonstrations drawn from ``pool``."""
    queries = list(zip(builder.truncate([q for q, _ in queries]), [lab for _, lab in queries], strict=True))
    prompts = []
    for i, query in enumerate(queries):
        demos = balanced_sample(pool, builder.shots, random.Random(f"{seed}/demos/{i}"))
        demos = list(zip(builder.truncate([d for d, _ in demos]), [lab for _, lab in demos], strict=True))
        prompts.append(builder.build(demos, query))
    return prompts


def imdb_prompts(
    loaded: LoadedRun, n: int, prompt: ImdbPromptOptions, *, seed: int = 0, answer_tokens: int = 5
) -> tuple[PromptBuilder, list[Prompt]]:
    """``n`` label-balanced few-shot IMDB prompts (held-out queries, train demonstrations)."""
    builder = PromptBuilder(
        loaded,
        PromptFormat.of(prompt),
        shots=prompt.shots,
        max_shots=prompt.max_shots,
        max_review_tokens=prompt.max_review_tokens,
        answer_tokens=answer_tokens,
    )
    held_out = by_label(read_labelled("validation", loaded, prompt.source))
    queries = balanced_sample(held_out, n, random.Random(f"{seed}/queries"))
    pool = by_label(read_labelled("train", loaded, prompt.source)) if builder.shots else {0: [], 1: []}
    return builder, sample_prompts(builder, pool, queries, seed)


# ---------------------------------------------------------------------------------------------- scoring


@torch.no_grad()
def score_prompt(
    model: torch.nn.Module,
    ids: list[int],
    continuations: list[list[int]],
    max_new_tokens: int,
    device: torch.device,
) -> tuple[list[float], list[int]]:
    """Log-likelihood of each continuation after ``ids`` and the greedy continuation, from one prefill.

    The prompt is run once into a static decoding cache; each continuation is scored on a copy of the cache
    and greedy decoding then continues from the original, so all three scores share one forward pass.
    """
    room = max([max_new_tokens, *(len(c) for c in continuations)])
    decoder = Decoder(model, 1, len(ids) + room)
    first = decoder.prefill(torch.tensor([ids], device=device))[0].float().log_softmax(-1)
    scores = []
    for cont in continuations:
        lp = float(first[cont[0]])
        if len(cont) > 1:
            branch = copy.deepcopy(decoder.cache)
            logits = model(torch.tensor([cont[:-1]], device=device), cache=branch).logits[0].float()
            lps = logits.log_softmax(-1)
            lp += float(lps[torch.arange(len(cont) - 1), torch.tensor(cont[1:])].sum())
        scores.append(lp)
    generated = []
    token = int(first.argmax())
    for step in range(max_new_tokens):
        generated.append(token)
        if step + 1 < max_new_tokens:
            token = int(decoder.step(torch.tensor([token], device=device))[0].argmax())
    return scores, generated


def parse_answer(text: str, labels: tuple[str, ...]) -> tuple[int | None, str]:
    """The label a generation starts with (None if it starts with neither, or ambiguously) and its first
    line. "Starts with" means the label word followed by the end, a space or punctuation, not more letters."""
    answer = text.lstrip()
    first_line = answer.split("\n", 1)[0].strip() or repr(text)[1:-1]  # all whitespace: show it escaped
    hits = [
        i
        for i, lab in enumerate(labels)
        if answer.startswith(lab) and (len(answer) == len(lab) or not answer[len(lab)].isalnum())
    ]
    return (hits[0] if len(hits) == 1 else None), first_line


def run_imdb(loaded: LoadedRun, options: IclOptions) -> dict:
    """The three IMDB scores on ``options.limit`` queries (see the module docstring)."""
    o = options
    fmt = PromptFormat.of(o)
    builder, prompts = imdb_prompts(loaded, o.limit, o, seed=o.seed, answer_tokens=o.max_new_tokens)
    tok = loaded.tokenizer
    ll_correct = adherent = gen_correct = predicted_positive = 0
    off_format: collections.Counter[str] = collections.Counter()
    samples = []
    for i, prompt in enumerate(prompts):
        scores, generated = score_prompt(
            loaded.model, prompt.ids, builder.label_ids, o.max_new_tokens, loaded.device
        )
        ll_pred = int(scores[1] > scores[0])
        text = tok.decode(generated)
        gen_pred, first_line = parse_answer(text, fmt.labels)
        ll_correct += ll_pred == prompt.label
        predicted_positive += ll_pred == 1
        if gen_pred is None:
            off_format[first_line[:40]] += 1
        else:
            adherent += 1
            gen_correct += gen_pred == prompt.label
        if i < o.examples:
            samples.append(
                {
                    "prompt_tail": prompt.text[-160:],
                    "gold": fmt.labels[prompt.label],
                    "label_logprobs": dict(zip(fmt.labels, scores, strict=True)),
                    "generation": text,
                }
            )
    total = len(prompts)
    return {
        "metrics": {
            "loglik_accuracy": ll_correct / total,
            "format_adherence": adherent / total,
            "generation_accuracy": gen_correct / total,
        },
        "queries": total,
        "shots": builder.shots,
        "max_review_tokens": builder.max_review_tokens,
        "prompt_tokens_mean": sum(len(p.ids) for p in prompts) / total,
        "prompt_tokens_max": max(len(p.ids) for p in prompts),
        "loglik_positive_share": predicted_positive / total,
        "off_format_answers": off_format.most_common(10),
        "off_format_count": sum(off_format.values()),
        "examples": samples,
        "settings": {
            "template": o.template,
            "target_delimiter": o.target_delimiter,
            "separator": o.separator,
            "labels": {"0": fmt.labels[0], "1": fmt.labels[1]},
            "seed": o.seed,
            "shots_requested": o.shots,
            "max_shots": o.max_shots,
            "max_review_tokens_requested": o.max_review_tokens,
            "max_new_tokens": o.max_new_tokens,
            "context": loaded.seq_len,
            "queries_requested": o.limit,
            "demonstrations": "imdb train split, label-balanced, drawn per query",
            "queries_split": "imdb held-out split (hub: test; local pack: validation), label-balanced",
            "source": o.source,
            "bos": "EOS token prepended (as in the packed training stream)",
            "loglik": "sum of the label's token log-probs after target_delimiter",
        },
    }


# ------------------------------------------------------------------------------------ QuAC / NarrativeQA


@dataclass(frozen=True)
class QATask:
    """A hub QA dataset scored by token F1 of greedy answers (SQuAD normalisation, max over references)."""

    name: str
    hub_path: str
    split: str
    revision: str | None
    description: str


QA_TASKS = {
    "quac": QATask(
        "quac",
        "allenai/quac",
        "validation",
        "refs/convert/parquet",  # the hub's parquet export: datasets >= 4 no longer runs quac.py
        "QuAC (Choi et al. 2018) dialogues over a Wikipedia section; zero-shot as in the paper's Table 2",
    ),
    "narrativeqa": QATask(
        "narrativeqa",
        "deepmind/narrativeqa",
        "validation",
        None,
        "NarrativeQA (Kocisky et al. 2018), questions over story summaries",
    ),
}


def normalize_answer(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, split on whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def token_f1(prediction: str, references: list[str]) -> float:
    """Best token-overlap F1 of ``prediction`` against any reference."""
    best = 0.0
    pred = normalize_answer(prediction)
    for ref in references:
        gold = normalize_answer(ref)
        common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def _qa_items(task: QATask, rows, limit: int):
    """(context, history, question, references) tuples from the hub rows of a task."""
    count = 0
    for row in rows:
        if task.name == "narrativeqa":
            items = [
                (
                    row["document"]["summary"]["text"],
                    "",
                    row["question"]["text"],
                    [a["text"] for a in row["answers"]],
                )
            ]
        else:  # quac: one item per dialogue turn, earlier turns (with their reference answers) as history
            items, history = [], ""
            background = f"{row['wikipedia_page_title']} - {row['section_title']}\n{row['background']}"
            context = f"{background}\n\n{row['context']}"
            for question, answers in zip(row["questions"], row["answers"]["texts"], strict=True):
                items.append((context, history, question, list(answers)))
                history += f"Q: {question}\nA: {answers[0] if answers else 'CANNOTANSWER'}\n\n"
        for item in items:
            yield item
            count += 1
            if count >= limit:
                return


def run_qa(loaded: LoadedRun, task: QATask, *, limit: int, max_new_tokens: int = 24) -> dict:
    """Greedy answers and token F1 on a hub QA task; 'unavailable offline' when the hub cannot be read."""
    where = f"datasets.load_dataset({task.hub_path!r}, split={task.split!r}, revision={task.revision!r})"
    if hub_offline():
        return {
            "status": "unavailable offline",
            "reason": f"{task.name} is read from the Hugging Face hub ({where}), which is offline here "
            "(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE), and no PyPI, Debian or npm package ships a copy",
            "loader": where,
        }
    try:
        import datasets

        rows = datasets.load_dataset(task.hub_path, split=task.split, revision=task.revision, streaming=True)
        items = list(_qa_items(task, rows, limit))
    except (ConnectionError, OSError) as e:
        return {"status": "unavailable offline", "reason": f"cannot load {where}: {e}", "loader": where}
    tok, model = loaded.tokenizer, loaded.model
    f1s = []
    for context, history, question, refs in items:
        tail = tok.encode(f"\n\n{history}Q: {question}\nA:")
        room = loaded.seq_len - 1 - max_new_tokens - len(tail)
        ctx_ids = tok.encode(context)[-room:] if room > 0 else []  # keep the end nearest the question
        ids = [tok.eos_id, *ctx_ids, *tail][-(loaded.seq_len - max_new_tokens) :]
        _, generated = score_prompt(model, ids, [], max_new_tokens, loaded.device)
        answer = tok.decode(generated).strip().split("\n", 1)[0]
        f1s.append(token_f1(answer, refs))
    return {
        "status": "ok",
        "metrics": {"f1": sum(f1s) / len(f1s) if f1s else float("nan")},
        "questions": len(f1s),
        "settings": {
            "loader": where,
            "shots": 0,
            "max_new_tokens": max_new_tokens,
            "description": task.description,
        },
    }


# ---------------------------------------------------------------------------------------------- suite


def run(loaded: LoadedRun, options: IclOptions) -> dict:
    """The ``icl`` suite: IMDB, then QuAC and NarrativeQA when reachable.

    ``limit`` is the number of IMDB queries and of QA questions per task.
    """
    payload: dict = {"tasks": {}, "metrics": {}}
    for name in options.tasks:
        if name == "imdb":
            result = run_imdb(loaded, options)
        else:
            result = run_qa(
                loaded, QA_TASKS[name], limit=options.limit, max_new_tokens=options.qa_max_new_tokens
            )
        payload["tasks"][name] = result
        for key, value in result.get("metrics", {}).items():
            payload["metrics"][f"{name}/{key}"] = value
    if "imdb" in payload["tasks"]:  # the headline settings, at the top level for tables
        imdb = payload["tasks"]["imdb"]
        payload["shots"] = imdb["shots"]
        payload["queries"] = imdb["queries"]
    return payload


def summarize(payload: dict) -> list[str]:
    lines = []
    for name, r in payload.get("tasks", {}).items():
        if name == "imdb":
            m = r["metrics"]
            top = ", ".join(f"{a!r} x{c}" for a, c in r["off_format_answers"][:3])
            lines.append(
                f"imdb   {r['shots']}-shot, {r['queries']} queries: loglik acc {m['loglik_accuracy']:.3f}  "
                f"format {m['format_adherence']:.3f}  generation acc {m['generation_accuracy']:.3f}"
                + (f"  (off-format: {top})" if top else "")
            )
        elif r.get("status") == "ok":
            lines.append(f"{name:<6} F1 {r['metrics']['f1']:.3f} on {r['questions']} questions")
        else:
            lines.append(f"{name:<6} {r.get('status')}: {r.get('reason')}")
    return lines
