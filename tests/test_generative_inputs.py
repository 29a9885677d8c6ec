"""A property-based test of the loading gate and the checks before writing (hypothesis).

The project's own sweep and run files are mutated — a key dropped, duplicated or renamed, a value
retyped, negated, made huge or non-finite, given unicode or a path; the bytes made non-UTF-8, the text
truncated, an alias bomb appended — and each result is given to the command a user would run on it
(``sweep plan``, ``sweep launch --dry-run``, ``train --dry-run``). Each must be either accepted (exit 0)
or refused in one line naming the file and the key (or the line, offset or position of a file-level
problem), exit 2; never a traceback, never more than a few seconds, never a file written.

``ABLATE_GENERATIVE_EXAMPLES`` sets the number of inputs (default 500: about 20 s on two cores),
``ABLATE_GENERATIVE_RANDOM=1`` draws new ones (CI draws the same every run); the test prints what it tried
and how each ended.
"""

from __future__ import annotations

import collections
import copy
import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ablate.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEPS = [REPO / "sweeps" / "table4-tiny.yaml", REPO / "sweeps" / "mini-mqar.yaml"]
RUNS = [REPO / "sweeps" / "runs" / "tiny-1to7-web.yaml", REPO / "sweeps" / "runs" / "tiny-mqar.yaml"]
EXAMPLES = int(os.environ.get("ABLATE_GENERATIVE_EXAMPLES", "500"))
SECONDS = 10  # per input: a hang or an expansion gone exponential fails here, not in CI's time limit

UNICODE = ["日本語", "caf\u00e9", "\u202etxt.exe", "🙂", "a\u200bb", "\x7f", "Ω" * 300]
PATH_LIKE = ["../../x", "/etc/passwd", "a/b", "..", ".", "~", "$HOME", "C:\\x", "a\\b"]
VALUES = {
    "retype": st.sampled_from([None, True, "text", 3, 2.5, [1, 2], {"a": 1}, [], {}, "", "3e-3", "1:7"]),
    "huge": st.sampled_from([10**30, 2**63, 1e308, -(10**30), "x" * 20000, [0] * 5000, 10**4000]),
    "non_finite": st.sampled_from([math.nan, math.inf, -math.inf, ".nan", "inf"]),
    "unicode": st.sampled_from(UNICODE),
    "path_like": st.sampled_from(PATH_LIKE),
}
TEXT_MUTATIONS = ("duplicate", "bytes", "truncate", "bomb")
MUTATIONS = ["drop", "rename", "negate", *VALUES, *TEXT_MUTATIONS]

outcomes: collections.Counter = collections.Counter()
slowest = [0.0, ""]


def key_paths(node, prefix=()):
    """Every key or list index path of a document (not the root)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield (*prefix, key)
        yield from key_paths(value, (*prefix, key))


def parent_of(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


def mutated(data, source: Path) -> tuple[bytes, str]:
    """``source`` with one to three mutations (bytes), and what they were."""
    text = source.read_text()
    doc = yaml.safe_load(text)
    done = []
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        if kind in TEXT_MUTATIONS:  # on the file's text: the last mutation
            raw, what = text_mutation(data, kind, text if not done else dump(doc))
            return raw, "; ".join([*done, what])
        done.append(doc_mutation(data, kind, doc))
    return dump(doc).encode(), "; ".join(done)


def dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def text_mutation(data, kind: str, text: str) -> tuple[bytes, str]:
    if kind == "bytes":
        raw = text.encode()
        at = data.draw(st.integers(0, len(raw)), label="offset")
        bad = data.draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xfe\xff", b"\xe9"]), label="bytes")
        return raw[:at] + bad + raw[at:], f"bytes {bad!r} at {at}"
    if kind == "truncate":
        at = data.draw(st.integers(0, len(text)), label="offset")
        return text[:at].encode(), f"truncated at {at}"
    if kind == "bomb":
        lines = ["z0: &z0 [a, a, a, a, a, a, a, a, a, a]"]
        lines += [f"z{i}: &z{i} [{', '.join([f'*z{i - 1}'] * 10)}]" for i in range(1, 9)]
        return (text + "\n" + "\n".join(lines) + "\n").encode(), "alias bomb"
    lines = text.splitlines()  # duplicate: a line repeated, a duplicated key (or list item)
    candidates = [i for i, line in enumerate(lines) if re.match(r"\s*[\w'\"-][^#]*:", line)] or [0]
    i = data.draw(st.sampled_from(candidates), label="line")
    return "\n".join(lines[: i + 1] + lines[i:]).encode(), f"duplicate line {i + 1}"


def doc_mutation(data, kind: str, doc) -> str:
    """Mutate the parsed document in place; returns what was done."""
    paths = list(key_paths(doc))
    if not paths:
        return f"{kind}: nothing left to mutate"
    path = data.draw(st.sampled_from(paths), label="path")
    parent, key = parent_of(doc, path), path[-1]
    where = ".".join(map(str, path))
    if kind == "drop":
        del parent[key]
        return f"drop {where}"
    if kind == "rename":
        if not isinstance(parent, dict):
            return f"rename {where}: not a mapping key (unchanged)"
        new = data.draw(st.sampled_from([*UNICODE, *PATH_LIKE, 7, None, "seeds"]), label="new key")
        parent[new] = parent.pop(key)
        return f"rename {where} -> {new!r}"
    if kind == "negate":
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            parent[key] = f"-{value}"
        else:
            parent[key] = -value if value else -1
    else:
        parent[key] = copy.deepcopy(data.draw(VALUES[kind], label="value"))  # never shared between inputs
    return f"{kind} {where} {repr(parent[key])[:40]}"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _alarm(signum, frame):
    raise TimeoutError(f"no answer within {SECONDS} s")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("ABLATE_GENERATIVE_RANDOM"),  # CI: the same inputs every run
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(st.data())
def test_mutated_project_files_are_accepted_or_refused_cleanly(tmp_path, monkeypatch, capsys, data):
    kind = data.draw(st.sampled_from(["sweep", "run"]), label="file kind")
    source = data.draw(st.sampled_from(SWEEPS if kind == "sweep" else RUNS), label="file")
    raw, what = mutated(data, source)
    outcomes["tried"] += 1
    work = tmp_path / f"case-{outcomes['tried']}"
    work.mkdir()
    monkeypatch.chdir(work)
    path = Path(f"mutated-{source.name}")
    path.write_bytes(raw)
    if kind == "sweep":
        command = data.draw(st.sampled_from(["plan", "launch"]), label="command")
        argv = ["sweep", "plan", str(path), "--no-sbatch"]
        if command == "launch":
            argv = ["sweep", "launch", str(path), "--dry-run", "--executor", "local", "--root", "runs"]
    else:
        argv = ["train", str(path), "--dry-run"]
    before = tree(work)
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    t0 = time.perf_counter()
    try:
        rc = main(argv)  # any exception here is a traceback the user would see: the test fails
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    case = f"{source.name}: {what} -> {' '.join(argv[:2])}"
    if elapsed > slowest[0]:
        slowest[:] = [elapsed, case]
    assert tree(work) == before, f"{case} wrote {tree(work) - before}"
    if rc == 0:
        outcomes["accepted"] += 1
        assert not err.strip(), (case, err)
        return
    assert rc == 2, (case, rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), (case, err)
    assert str(path) in lines[0], (case, err)
    located = "key '" in err or re.search(r"line \d+|offset \d+|position \d+|larger than|top level", err)
    assert located, (case, err)
    outcomes["refused"] += 1
    outcomes["refused naming the key" if "key '" in err else "refused naming the place in the file"] += 1


def test_report_generative_outcomes(capsys):
    """Runs after the property (same module, file order): prints what it tried."""
    with capsys.disabled():
        print(
            f"\ngenerative inputs: {outcomes['tried']} tried, {outcomes['accepted']} accepted, "
            f"{outcomes['refused']} refused (exit 2, one line: "
            f"{outcomes['refused naming the key']} naming the key, "
            f"{outcomes['refused naming the place in the file']} the line, offset or position); none raised, "
            f"hung or wrote; slowest {slowest[0]:.2f} s ({slowest[1][:160]})"
        )
