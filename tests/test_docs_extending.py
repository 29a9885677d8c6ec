"""docs/extending.md works as written: on a copy of the checkout, each of its blocks in order (a file block
whose first line is "# file: PATH" is written there, a diff block is applied with `git apply`, a bash block
runs), in one shell; then ruff and the model, accounting and run-id tests pass on the extended copy. A step
that fails is named by its number and first line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "extending.md"
FENCE = re.compile(r"```(bash|diff|python|yaml)\n(.*?)```", re.S)
FILE = re.compile(r"# file: (\S+)\n")


def steps() -> list[tuple[str, str]]:
    """(kind, text) of every block, in the guide's order; kind: file, diff or bash."""
    out = []
    for lang, text in FENCE.findall(GUIDE.read_text()):
        if lang == "bash" or lang == "diff":
            out.append((lang, text))
        elif FILE.match(text):
            out.append(("file", text))
        else:
            raise AssertionError(f"a {lang} block without '# file: PATH' is neither run nor written:\n{text}")
    return out


def script(blocks: list[tuple[str, str]]) -> str:
    """One bash script doing every step, each announced on stderr so that a failure names its step."""
    lines = ["set -euo pipefail"]
    for n, (kind, text) in enumerate(blocks, 1):
        first = text.splitlines()[0]
        lines.append(f"echo {_quote(f'### step {n} ({kind}): {first}')} >&2")
        if kind == "file":
            path = FILE.match(text).group(1)
            lines += [f"mkdir -p {_quote(str(Path(path).parent))}", f"cat > {_quote(path)} <<'JAMBA_EOF'"]
            lines += [text.rstrip("\n"), "JAMBA_EOF"]
        elif kind == "diff":
            lines += ["git apply --verbose <<'JAMBA_EOF'", text.rstrip("\n"), "JAMBA_EOF"]
        else:
            lines.append(text)
    return "\n".join(lines) + "\n"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def copy_checkout(dest: Path) -> None:
    """The files git knows of (tracked, and untracked but not ignored), without the committed results."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in listed:
        if not rel or rel.startswith("results/") or not os.path.lexists(REPO / rel):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel, follow_symlinks=False)


def test_the_guide_has_the_four_extensions_and_every_block_is_used():
    kinds = [k for k, _ in steps()]
    assert kinds.count("file") == 3 and kinds.count("diff") >= 9 and kinds.count("bash") >= 6
    text = GUIDE.read_text()
    headings = re.findall(r"^## \d\. (.*?):", text, re.M)
    assert headings == ["A new arm", "A new evaluation suite", "A new mixer", "A new table"]


def test_the_guides_examples_are_not_in_the_checkout():
    """The guide adds them: a checkout that already had them would let its diffs fail (or pass) for the
    wrong reason."""
    assert not (REPO / "evals" / "calibration.py").exists()
    assert not (REPO / "harness" / "model" / "short_conv.py").exists()
    assert not (REPO / "sweeps" / "extending-tiny.yaml").exists()


def test_every_step_of_the_extension_guide_works(eval_packs, tmp_path):
    copy = tmp_path / "checkout"
    copy_checkout(copy)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(copy),  # the copy's packages, not this checkout's (ablate is installed editable)
        "MPLBACKEND": "Agg",
    }
    done = subprocess.run(["bash", "-c", script(steps())], cwd=copy, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    out = done.stdout
    runs = copy / "runs" / "extending-tiny"
    arms = sorted(p.name.split("-")[0] for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert arms == ["1to1", "1to3", "attention", "conv"]
    for run in runs.glob("*-*"):
        assert (run / "evals" / "calibration.json").exists() and (run / "evals" / "perplexity.json").exists()
    assert "accounting matches" in out
    assert "keeps no decoding state" in out
    report = (copy / "report" / "index.md").read_text()
    assert "short convolution in the 1:3 hybrid" in report and "C4 ECE" in report

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    lint = subprocess.run([ruff, "check", "."], cwd=copy, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/test_model.py", "tests/test_accounting.py", "tests/test_run_ids.py"],
        cwd=copy, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]
