"""The mini reproduction on one GPU: calibrate, launch, follow, pack (results/mini/ is one run of this).

Run THERE, on the lent GPU machine, after ``JAMBA_BUILD_KERNELS=1 source scripts/gpu/setup.sh``; every step
is a plain ``ablate sweep launch`` of the study's sweep files with the local executor (one process per run,
all on the one GPU), so nothing here trains or evaluates by itself:

    python3 scripts/gpu/mini_study.py start --train-seconds 780  # calibrate, fix the budget, launch
    python3 scripts/gpu/mini_study.py start --tokens 15000000 --sequential  # fixed budget; text, then MQAR
    python3 scripts/gpu/mini_study.py start --only sweeps/mini-mqar.yaml  # one sweep, budget as in its file
    python3 scripts/gpu/mini_study.py wait --seconds 540         # follow until all are done, or time is up
    python3 scripts/gpu/mini_study.py pack $OUT                  # small files -> $OUT/mini-results.tar.xz

``start`` first trains every run of both sweeps for ``--calibrate-steps`` steps, all at once as the real runs
will be, and reads each one's tokens/s from its metrics. From those rates it picks the largest token
budget for the text sweep (the same for every arm, at most 50M) such that all runs finish within
``--train-seconds``, simulating the runs finishing one after another (a run's share of the GPU grows as
others end, at most ``--speedup-cap`` times its shared rate). ``--tokens`` fixes the budget instead
and skips the calibration. The sweep files actually run are written to ``ROOT/sweeps/`` with that budget
(never under ``results/``: the device tool's next command replaces the working tree, and anything written
into a tracked folder there is lost), then launched in a session of their own, so they keep training
between the device tool's commands while the machine is held: all at once, or with ``--sequential`` one
sweep after another (the text study, then MQAR), which keeps the CPU cores that feed the GPU from being
oversubscribed. ``study.json`` records the device, the
versions, the commit, the calibration, the budget and the timings; ``pack`` archives it with every run
directory's small files (config, run.json, status, metrics, events, eval results and attention maps; one
copy of each tokenizer; the job logs' tails; never checkpoints).

``--scale tiny`` runs the same pipeline with the tiny family on a CPU in minutes: the test of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SWEEPS = ("sweeps/mini.yaml", "sweeps/mini-mqar.yaml")
TEXT_SWEEP = "sweeps/mini.yaml"  # the one whose token budget is chosen
MAX_TOKENS = 50_000_000
RUN_FILES = ("config.yaml", "run.json", "status.json", "metrics.jsonl", "events.jsonl", "job.json")
LOG_TAIL_BYTES = 200_000


def _now() -> float:
    return time.time()


def _root(args) -> Path:
    return Path(args.root).resolve()


def _state_path(args) -> Path:
    return _root(args) / "study.json"


def _read_state(args) -> dict:
    path = _state_path(args)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(args, state: dict) -> None:
    path = _state_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2) + "\n")


def _device() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpus=torch.cuda.device_count(),
        )
    try:
        import selective_scan_cuda  # noqa: F401

        info["mamba_ssm_kernels"] = True
    except ImportError:
        info["mamba_ssm_kernels"] = False
    for name in ("mamba_ssm", "lm_eval", "transformers", "datasets", "submitit"):
        try:
            from importlib import metadata

            info[name] = metadata.version(name if name != "mamba_ssm" else "mamba-ssm")
        except Exception:
            info[name] = None
    return info


def _tiny(data: dict) -> dict:
    """The same study with the tiny family, short runs and small eval limits: a CPU test of this script."""
    text = yaml.safe_dump(data, sort_keys=False).replace("preset: mini-", "preset: tiny-")
    data = yaml.safe_load(text)
    base = data["base"]
    base["model"]["vocab_size"] = 1024 if base["data"]["train"][0]["name"] != "mqar" else 512
    tok = base["data"]["tokenizer"]
    tok.update(vocab_size=base["model"]["vocab_size"], max_train_bytes=1_000_000)
    for i, corpus in enumerate(c for c in base["data"]["train"] if c.get("mqar")):
        corpus["mqar"].update(vocab=256, seq_lens=[32 * (i + 1)], num_pairs=[2 * (i + 1), 4 * (i + 1)])
    train = base["train"]
    train.update(seq_len=min(train["seq_len"], 128), global_batch=4, micro_batch=4)
    train.update(eval_every=0, eval_batches=1, checkpoint_every=0, log_every=1)
    if "tokens" in train:
        train["tokens"] = 64 * 128 * 4
    else:
        train["steps"] = 40
    data["resources"]["gpus_per_node"] = 0
    data["seeds"] = data["seeds"][:1]
    data["arms"] = dict(list(data["arms"].items())[:2])
    data["compare"] = []
    for suite, options in data.get("eval_options", {}).items():
        options["limit"] = 2 if suite not in ("icl",) else 4
        if suite == "perplexity":
            options.update(max_doc_bytes=2000, corpora=["c4"])
        if suite == "induction":
            options["natural_corpus"] = None
    data["evals"] = [s for s in data["evals"] if s not in ("ollm", "ablation")]
    data["eval_options"] = {k: v for k, v in data.get("eval_options", {}).items() if k in data["evals"]}
    return data


def _study_files(args) -> list[tuple[str, dict]]:
    out = []
    for rel in args.only or SWEEPS:
        if not (REPO / rel).is_file():
            raise SystemExit(f"--only {rel}: no such sweep file under {REPO}")
        data = yaml.safe_load((REPO / rel).read_text())
        if args.arms:  # the other arms keep their run ids and are launched by a later start
            wanted = args.arms.split(",")
            unknown = [a for a in wanted if a not in data.get("arms", {})]
            if unknown:
                raise SystemExit(f"--arms: {rel} has no arm {', '.join(unknown)} ({', '.join(data['arms'])})")
            data["arms"] = {a: v for a, v in data["arms"].items() if a in wanted}
        out.append((rel, _tiny(data) if args.scale == "tiny" else data))
    return out


def split_grid(study: list[tuple[str, dict]], spec: str | None) -> list[tuple[str, dict, str]]:
    """``(rel, data, suffix)`` to launch in order: with ``spec`` (``AXIS=V1,V2,...``), every sweep whose
    grid has AXIS once per value, values in the order given, sweeps interleaved; the sweep name is kept,
    so the runs (and their directories) are those of the whole sweep."""
    if not spec:
        return [(rel, data, "") for rel, data in study]
    axis, _, values = spec.partition("=")
    order = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not axis or not order:
        raise SystemExit(f"--split-grid {spec!r}: expected AXIS=V1,V2,... (e.g. model.d_model=128,256)")
    out = []
    for value in order:
        for rel, data in study:
            grid = data.get("grid") or {}
            if axis not in grid:
                if value == order[0]:
                    out.append((rel, data, ""))
                continue
            if value not in grid[axis]:
                raise SystemExit(f"--split-grid: {value!r} is not among {rel}'s {axis} values {grid[axis]}")
            part = yaml.safe_load(yaml.safe_dump(data))
            part["grid"][axis] = [value]
            out.append((rel, part, f"-{axis.rsplit('.', 1)[-1]}{value}"))
    return out


def copy_finished(source: Path, root: Path) -> int:
    """Copy every run directory under ``source`` (``<sweep>/<run>/run.json``) that ``root`` lacks."""
    copied = 0
    for record in sorted(source.glob("*/*/run.json")):
        target = root / record.parent.relative_to(source)
        if not target.exists():
            shutil.copytree(record.parent, target, symlinks=True)
            copied += 1
    return copied


def _launch(
    files: list[Path], root: Path, *, wait: bool, log: Path, detach: bool, keep_going: bool = False
) -> subprocess.Popen:
    """``ablate sweep launch FILE --executor local`` for each file, one after the other, in one shell (with
    ``keep_going``, a sweep whose launch or runs fail does not stop the next one)."""
    cmds = [
        [
            sys.executable,
            "-m",
            "ablate.cli",
            "sweep",
            "launch",
            str(f),
            "--executor",
            "local",
            "--root",
            str(root),
        ]
        + (["--wait", "--poll", "5"] if wait else [])
        for f in files
    ]
    script = (" ; " if keep_going else " && ").join(" ".join(f"'{c}'" for c in cmd) for cmd in cmds)
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "a")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        ["bash", "-c", script], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=detach
    )


def _rates(root: Path, sweep_name: str, warmup: int) -> dict[str, dict]:
    """Per run of a calibration sweep: its arm and its median tokens/s after ``warmup`` steps."""
    out = {}
    for run in sorted((root / sweep_name).glob("*/run.json")):
        record = json.loads(run.read_text())
        rows = [json.loads(line) for line in (run.parent / "metrics.jsonl").read_text().splitlines() if line]
        speeds = sorted(r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > warmup)
        if not speeds:
            raise SystemExit(f"calibration run {run.parent} logged no steps after {warmup}: see its logs")
        out[run.parent.name] = {
            "arm": record["arm"],
            "seed": record["seed"],
            "tokens_per_s": speeds[len(speeds) // 2],
            "tokens_per_step": record["train"]["tokens"] // record["train"]["steps"],
        }
    return out


def simulate(work: list[tuple[float, float]], cap: float) -> float:
    """Seconds until every run is done: ``work`` holds (tokens, tokens/s measured with all of them running);
    when runs end, the others speed up in proportion (time-sharing one GPU), at most ``cap`` times."""
    left = [w for w, _ in work]
    rates = [r for _, r in work]
    n0, t = len(work), 0.0
    active = [i for i in range(len(work)) if left[i] > 0]
    while active:
        boost = min(cap, n0 / len(active))
        speed = {i: rates[i] * boost for i in active}
        dt = min(left[i] / speed[i] for i in active)
        t += dt
        for i in active:
            left[i] -= speed[i] * dt
        active = [i for i in active if left[i] > 1e-6]
    return t


def choose_budget(text: dict[str, dict], other: list[tuple[float, float]], seconds: float, cap: float) -> int:
    """The largest token budget per text run (a multiple of 1M, at most MAX_TOKENS) that lets every run
    finish within ``seconds``."""
    best = 1_000_000
    for millions in range(1, MAX_TOKENS // 1_000_000 + 1):
        tokens = millions * 1_000_000
        work = [(tokens, r["tokens_per_s"]) for r in text.values()] + other
        if simulate(work, cap) <= seconds:
            best = tokens
    return best


def _calibrate(args, root: Path) -> dict:
    """Every run of both sweeps, all at once, ``--calibrate-steps`` steps: per sweep, per run, its arm and
    tokens/s (and ``_meta``: seconds and steps)."""
    calib_dir = root / "calibration"
    calib_files = []
    for rel, data in _study_files(args):
        data = json.loads(json.dumps(data))
        data["name"] += "-calib"
        train = data["base"]["train"]
        train.pop("tokens", None)
        train.update(steps=args.calibrate_steps, eval_every=0, checkpoint_every=0, log_every=1)
        data.update(evals=[], eval_options={}, compare=[])
        path = calib_dir / Path(rel).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        calib_files.append(path)
    t0 = _now()
    proc = _launch(calib_files, root, wait=True, log=root / "calibration.log", detach=False)
    if proc.wait() != 0:
        raise SystemExit(f"calibration failed (exit {proc.returncode}); see {root / 'calibration.log'}")
    warmup = args.calibrate_steps // 2
    names = [yaml.safe_load(f.read_text())["name"] for f in calib_files]
    rates = {name: _rates(root, name, warmup) for name in names}
    for name in names:  # calibration checkpoints are of no further use, and the disk is shared
        for ckpt in (root / name).glob("*/checkpoints"):
            shutil.rmtree(ckpt, ignore_errors=True)
    seconds = round(_now() - t0, 1)
    print(f"[study] calibration in {seconds} s:", flush=True)
    for name, runs in rates.items():
        for r in runs.values():
            print(f"[study]   {name:<18} {r['arm']:<16} seed {r['seed']}  {r['tokens_per_s']:>10,.0f} tok/s")
    return {**rates, "_meta": {"seconds": seconds, "steps": args.calibrate_steps}}


def cmd_start(args) -> None:
    root = _root(args)
    state = _read_state(args)
    state.update(started_at=_now(), device=_device(), commit=os.environ.get("MINI_COMMIT"), scale=args.scale)
    state["host_cpus"] = os.cpu_count()
    _write_state(args, state)
    print(f"[study] device {json.dumps(state['device'])}", flush=True)

    if args.resume_from:
        copied = copy_finished(Path(args.resume_from).resolve(), root)
        state["resumed_from"] = {"dir": args.resume_from, "runs_copied": copied}
        print(f"[study] copied {copied} run directories from {args.resume_from}", flush=True)
    study = _study_files(args)  # parsed once: the budget loop below writes into these dicts
    names = [f"{data['name']}-calib" for _, data in study]
    has_text = any(rel == TEXT_SWEEP for rel, _ in study)
    rates = _calibrate(args, root) if args.tokens is None and has_text else {}
    if rates:
        state["calibration"] = rates.pop("_meta") | {"rates": rates}
    elif not has_text:
        state["calibration"] = {"skipped": "no text sweep: every sweep run has its budget in its file"}
    else:
        state["calibration"] = {"skipped": f"--tokens {args.tokens} fixed the budget"}
    _write_state(args, state)

    # 2. the budget, and the sweep files actually run.
    final_dir = root / "sweeps"
    final_dir.mkdir(parents=True, exist_ok=True)
    files, text_name, other = [], None, []
    for (rel, data), name in zip(study, names, strict=True):
        train = data["base"]["train"]
        if rel != TEXT_SWEEP and rates:
            steps = train["steps"]
            other += [(steps * r["tokens_per_step"], r["tokens_per_s"]) for r in rates[name].values()]
    launches = split_grid(study, args.split_grid)
    names = {rel: name for (rel, _), name in zip(study, names, strict=True)}
    for rel, data, suffix in launches:
        name = names[rel]
        if rel == TEXT_SWEEP:
            text_name = name
            if args.tokens is not None:
                data["base"]["train"]["tokens"] = state["text_tokens_per_run"] = args.tokens
            elif args.scale == "mini":
                budget = choose_budget(rates[name], other, args.train_seconds, args.speedup_cap)
                data["base"]["train"]["tokens"] = budget
                state["text_tokens_per_run"] = budget
        path = final_dir / f"{Path(rel).stem}{suffix}.yaml"
        if rel != TEXT_SWEEP:
            budget_source = "in the file"
        else:
            budget_source = "of --tokens" if args.tokens else "the calibration allowed"
        header = (
            f"# As run by scripts/gpu/mini_study.py on {state['device'].get('gpu', 'CPU')} (study.json):\n"
            f"# {rel} with the token budget {budget_source}.\n"
        )
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        files.append(path)
    state["sweep_files"] = [str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f) for f in files]
    budget = state.get("text_tokens_per_run")
    line = f"[study] budget: {f'{budget:,} tokens per text run' if budget else 'as in each sweep file'}"
    if rates:
        predicted = simulate(
            [(budget or 0, r["tokens_per_s"]) for r in rates[text_name].values()] + other, args.speedup_cap
        )
        state["predicted_train_seconds"] = round(predicted, 1)
        line += f"; training predicted to take {predicted:.0f} s (allowed {args.train_seconds} s)"
    print(line, flush=True)

    # 3. launch, detached: the runs keep going between commands while the machine is held.
    state["launched_at"] = _now()
    state["sequential"] = args.sequential
    _write_state(args, state)
    log = root / "launch.log"
    proc = _launch(files, root, wait=args.sequential, log=log, detach=True, keep_going=args.sequential)
    if args.sequential:  # the shell goes on launching each sweep when the one before it has finished
        state["launcher_pid"] = proc.pid
        _write_state(args, state)
        print(f"[study] launching {len(files)} sweeps one after another; follow with: mini_study.py wait")
        return
    if proc.wait() != 0:
        raise SystemExit(f"launch failed (exit {proc.returncode}); see {root / 'launch.log'}")
    print(f"[study] launched {len(files)} sweeps; follow with: mini_study.py wait", flush=True)


def _states(args) -> list:
    from sweeps.config import expand_sweep, load_sweep
    from sweeps.lifecycle import run_states

    out = []
    for f in _read_state(args).get("sweep_files", []):  # split launches of one sweep share its runs' names
        sweep = load_sweep(REPO / f)
        out += run_states(sweep, expand_sweep(sweep), _root(args))
    return out


def _launcher_alive(args) -> bool:
    """Whether a ``--sequential`` launcher shell is still going (it has sweeps left to launch or wait for)."""
    pid = _read_state(args).get("launcher_pid")
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (finished, not yet reaped) is not alive
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def cmd_wait(args) -> None:
    deadline = _now() + args.seconds
    last = 0.0
    while True:
        states = _states(args)
        if not states:
            raise SystemExit("nothing launched yet: run `mini_study.py start`")
        busy = any(s.active for s in states) or _launcher_alive(args)
        if _now() - last >= args.every or not busy:
            last = _now()
            counts: dict[str, int] = {}
            for s in states:
                counts[s.state] = counts.get(s.state, 0) + 1
            progress = sum(min(s.step, s.total_steps) for s in states) / max(
                1, sum(s.total_steps for s in states)
            )
            print(f"[study] {time.strftime('%H:%M:%S')} {progress:6.1%} of all steps; {counts}", flush=True)
        if not busy:
            state = _read_state(args)
            state.setdefault("finished_at", _now())
            _write_state(args, state)
            for s in states:
                if s.state != "done":
                    print(f"[study] {s.run.label} {s.state}: {s.detail}", flush=True)
            return
        if _now() >= deadline:
            return
        time.sleep(5)


def cmd_pack(args) -> None:
    """The small files of every run (and one copy of each tokenizer) into OUT/mini-results.tar.xz."""
    root = _root(args)
    state = _read_state(args)
    state["packed_at"] = _now()
    if "launched_at" in state:
        ends = []
        files = state.get("sweep_files", [])
        for name in dict.fromkeys(yaml.safe_load((REPO / f).read_text())["name"] for f in files):
            for run in (root / name).glob("*/events.jsonl"):
                ev = [json.loads(line) for line in run.read_text().splitlines() if line]
                finish = [e["time"] for e in ev if e["event"] == "finish"]
                evals = [e["time"] for e in ev if e["event"] == "eval"]
                start = next((e["time"] for e in ev if e["event"] == "start"), None)
                ends.append(
                    {
                        "run": f"{name}/{run.parent.name}",
                        "train_s": round(finish[-1] - start, 1) if finish and start else None,
                        "evals_s": round(max(evals) - finish[-1], 1) if finish and evals else None,
                    }
                )
        state["runs"] = ends
    _write_state(args, state)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "mini-results.tar.xz"
    tokenizers: dict[str, str] = {}
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        tar.add(_state_path(args), arcname="study.json")
        for log in ("calibration.log", "launch.log"):
            if (root / log).exists():
                tar.add(root / log, arcname=f"logs/{log}")
        for f in state.get("sweep_files", []):
            tar.add(REPO / f, arcname=f"sweeps/{Path(f).name}")
        for run_json in sorted(root.glob("*/*/run.json")):
            run = run_json.parent
            rel = run.relative_to(root)
            for name in RUN_FILES:
                if (run / name).exists():
                    tar.add(run / name, arcname=f"runs/{rel}/{name}")
            if (run / "evals").is_dir():
                for path in sorted((run / "evals").rglob("*")):
                    if path.is_file():
                        tar.add(path, arcname=f"runs/{rel}/evals/{path.relative_to(run / 'evals')}")
            tok = run / "tokenizer" / "tokenizer.json"
            if tok.exists():
                digest = _digest(tok)
                if digest not in tokenizers:
                    tokenizers[digest] = f"tokenizers/{digest}"
                    tar.add(run / "tokenizer", arcname=tokenizers[digest])
                _add_link(tar, f"runs/{rel}/tokenizer", f"{'../' * (len(rel.parts) + 1)}{tokenizers[digest]}")
            job = run / "job.json"
            if job.exists():
                record = json.loads(job.read_text())
                for stream in ("stdout", "stderr"):
                    _add_tail(
                        tar, Path(record[stream]), f"runs/{rel}/logs/job-{record['job_id']}.{stream[3:]}"
                    )
    print(f"[study] {archive} ({archive.stat().st_size / 2**20:.1f} MiB)", flush=True)


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def _add_tail(tar: tarfile.TarFile, path: Path, name: str) -> None:
    if not path.exists():
        return
    import io

    data = path.read_bytes()[-LOG_TAIL_BYTES:]
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="runs", help="run directories go to ROOT/<sweep>/ (default runs)")
    parser.add_argument("--scale", choices=("mini", "tiny"), default="mini", help="tiny: a CPU test")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="calibrate, choose the token budget, launch (detached)")
    start.add_argument("--train-seconds", type=float, default=780, help="time every run must train within")
    start.add_argument("--calibrate-steps", type=int, default=30)
    start.add_argument("--speedup-cap", type=float, default=3.0, help="most a run speeds up as others end")
    start.add_argument(
        "--tokens", type=int, help="tokens per text run: fixes the budget and skips the calibration"
    )
    start.add_argument(
        "--only",
        action="append",
        help=f"run this sweep file (repeatable; default: the mini study, {' and '.join(SWEEPS)})",
    )
    start.add_argument(
        "--split-grid",
        metavar="AXIS=V1,V2,...",
        help="launch each sweep once per value of this grid axis, in this order, interleaving the sweeps "
        "(e.g. model.d_model=128,256,512,64): local runs are served in launch order, so the values "
        "listed first are trained first, and a lease that ends early has them for every sweep",
    )
    start.add_argument(
        "--arms", metavar="A,B,...", help="launch only these arms of each sweep (the rest in a later start)"
    )
    start.add_argument(
        "--resume-from",
        metavar="DIR",
        help="copy the run directories under DIR (a committed study's runs/) into ROOT first: finished "
        "runs are skipped, the others start again",
    )
    start.add_argument(
        "--sequential", action="store_true", help="launch each sweep when the one before it has finished"
    )
    wait = sub.add_parser("wait", help="follow the runs until all are done or --seconds have passed")
    wait.add_argument("--seconds", type=float, default=540)
    wait.add_argument("--every", type=float, default=60, help="seconds between progress lines")
    pack = sub.add_parser("pack", help="archive the runs' small files into OUT/mini-results.tar.xz")
    pack.add_argument("out")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    {"start": cmd_start, "wait": cmd_wait, "pack": cmd_pack}[args.command](args)


if __name__ == "__main__":
    main()
