"""scripts/gpu/bench_plan.py: steps run once, in order, only when they fit the command's time; a failed or
overrunning step is recorded and the plan goes on; pack archives records and logs. (The real steps are GPU
benchmarks; here the plan is swapped for quick shell commands, which exercise the same runner.)"""

import importlib.util
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "bench_plan.py"
spec = importlib.util.spec_from_file_location("bench_plan", SCRIPT)
bench_plan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_plan)


def _steps(tmp_path):
    """Quick steps run as ``python -m pytest ...`` would be: through the runner's pytest branch, on small
    test files that pass, fail and sleep."""
    marker = tmp_path / "runs.txt"
    (tmp_path / "test_ok.py").write_text(f"def test_ok():\n    open({str(marker)!r}, 'a').write('ok\\n')\n")
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    print('broken')\n    assert False\n")
    (tmp_path / "test_slow.py").write_text("import time\n\ndef test_slow():\n    time.sleep(30)\n")
    quiet = "-q -p no:cacheprovider --rootdir"
    return (
        ("ok", 60, f"pytest {tmp_path / 'test_ok.py'} {quiet} {tmp_path}"),
        ("fails", 60, f"pytest {tmp_path / 'test_fails.py'} {quiet} {tmp_path}"),
        ("slow", 3, f"pytest {tmp_path / 'test_slow.py'} {quiet} {tmp_path}"),
        ("too-long", 10_000, f"pytest {tmp_path / 'test_ok.py'}"),
    ), marker


def test_steps_run_once_fail_or_time_out_and_pack(tmp_path, monkeypatch, capsys):
    steps, marker = _steps(tmp_path)
    monkeypatch.setattr(bench_plan, "STEPS", steps)
    root = tmp_path / "plan"
    bench_plan.main(["--root", str(root), "run", "--seconds", "200"])
    state = bench_plan._state(root)["steps"]
    assert state["ok"]["rc"] == 0 and state["fails"]["rc"] == 1 and state["slow"]["rc"] == "timeout"
    assert "too-long" not in state  # its limit does not fit in the command's 200 s
    printed = capsys.readouterr().out
    assert "needs up to 10000 s" in printed
    # the step that did not fit is named again on the last line, where a short output tail still shows it
    last = printed.strip().splitlines()[-1]
    assert last == "[plan] NOT STARTED, --seconds 200 too short: too-long (10000 s)"
    assert "broken" in (root / "out" / "fails.log").read_text()

    bench_plan.main(["--root", str(root), "run", "--seconds", "200"])  # done steps are not run again
    assert marker.read_text() == "ok\n"
    bench_plan.main(["--root", str(root), "run", "--seconds", "200", "--redo", "ok", "--only", "ok"])
    assert marker.read_text() == "ok\nok\n"

    bench_plan.main(["--root", str(root), "pack", str(tmp_path / "back")])
    with tarfile.open(tmp_path / "back" / "bench-plan.tar.xz") as tar:
        assert {"plan.json", "out/ok.log", "out/fails.log", "out/slow.log"} <= set(tar.getnames())


def test_unknown_step_names_the_steps(tmp_path):
    with pytest.raises(SystemExit, match="no step 'prefil'.*prefill-1.3b-1to7"):
        bench_plan.main(["--root", str(tmp_path), "run", "--only", "prefil"])


def test_bench_commands_write_their_record_under_out(tmp_path):
    out = tmp_path / "out"
    commands = {name: bench_plan._command(name, command, out) for name, _, command in bench_plan.STEPS}
    assert commands["train-1.3b-1to7"][-2:] == ["--json", f"{out}/train-1.3b-1to7.json"]
    assert commands["prefill-1.3b-1to7"][-2:] == ["--out", f"{out}/prefill-1.3b-1to7.json"]
    assert commands["gpu-tests"][1:4] == ["-m", "pytest", "-m"]
    from ablate.cli import build_parser

    for argv in commands.values():  # every ablate step parses with today's CLI
        if argv[1:3] != ["-m", "pytest"]:
            build_parser().parse_args(argv[3:])


def test_the_gpu_test_steps_run_every_gpu_test_once(monkeypatch):
    """The GPU suite is cut into steps that each fit a command; their ``-k`` selections must cover every
    ``-m gpu`` test exactly once, so that their logs together are the whole suite's run. (The steps name
    the files with GPU tests, so no other test file may carry the mark.)"""
    import re
    import shlex

    repo = SCRIPT.parents[2]
    monkeypatch.chdir(repo)  # the steps name their files from the repository's root, where they run
    files = bench_plan.GPU_FILES.split()
    marked = {
        f"tests/{p.name}"
        for p in (repo / "tests").glob("test_*.py")
        if re.search(r"pytest\.mark\.gpu\b", p.read_text())
    }
    assert marked == set(files)

    def collected(args: list[str]) -> list[str]:
        """The test ids pytest selects with ``args``, collected in this process (its imports are cached)."""

        class Ids:
            def __init__(self) -> None:
                self.ids: list[str] = []

            def pytest_collection_finish(self, session: pytest.Session) -> None:
                self.ids = [item.nodeid for item in session.items]

        ids = Ids()
        rc = pytest.main(
            [*args, "--collect-only", "-qq", "-p", "no:cacheprovider", "--rootdir", str(repo)], plugins=[ids]
        )
        assert rc == 0, args
        return ids.ids

    every = collected(["-m", "gpu", *files])
    steps = [
        [arg for arg in shlex.split(c)[1:] if arg not in ("-q", "-s")]
        for _, _, c in bench_plan.STEPS
        if c.startswith("pytest -m gpu")
    ]
    selected = [test for args in steps for test in collected(args)]
    assert len(steps) == 4 and len(every) > 100
    assert sorted(selected) == sorted(every)
