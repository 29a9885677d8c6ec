"""The line in which local jobs wait for a slot (harness.locks.queue_slot): at most N holders at once,
served in ticket order, and a waiter that dies leaves the line."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

HOLDER = """
import sys, time
from harness.locks import queue_slot
folder, slots, ticket, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with queue_slot(folder, slots, ticket, poll=0.05) as slot:
    with open(log, "a") as f:
        f.write(f"{ticket} start {time.time()} {slot}\\n")
    time.sleep(0.6)
    with open(log, "a") as f:
        f.write(f"{ticket} end {time.time()} {slot}\\n")
"""


def _spawn(tmp_path: Path, ticket: str, slots: int = 2) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-c", HOLDER, str(tmp_path / "line"), str(slots), ticket, str(tmp_path / "log")]
    return subprocess.Popen(args, cwd=root)


def test_at_most_n_at_once_in_ticket_order(tmp_path):
    # Both slots held here while the five line up, started in reverse order: the tickets, not the order in
    # which they came, decide who goes first.
    line = tmp_path / "line"
    (line / "queue").mkdir(parents=True)
    held = [open(line / f"slot-{i}", "a+") for i in range(2)]  # noqa: SIM115
    for f in held:
        fcntl.flock(f, fcntl.LOCK_EX)
    procs = [_spawn(tmp_path, f"t{i}") for i in (4, 3, 2, 1, 0)]
    deadline = time.monotonic() + 30
    while len(list((line / "queue").iterdir())) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for f in held:
        f.close()
    assert all(p.wait(timeout=60) == 0 for p in procs)
    events = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    live, most = 0, 0
    for _ticket, kind, _t, _slot in sorted(events, key=lambda e: float(e[2])):
        live += 1 if kind == "start" else -1
        most = max(most, live)
    assert most == 2
    starts = [e[0] for e in sorted(events, key=lambda e: float(e[2])) if e[1] == "start"]
    assert starts == ["t0", "t1", "t2", "t3", "t4"]
    assert not [p for p in (tmp_path / "line" / "queue").iterdir()]


def test_a_dead_waiter_leaves_the_line(tmp_path):
    holder = _spawn(tmp_path, "a", slots=1)
    time.sleep(0.3)
    dead = _spawn(tmp_path, "b", slots=1)  # waits behind a, then is killed in line
    time.sleep(0.3)
    dead.kill()
    dead.wait()
    last = _spawn(tmp_path, "c", slots=1)
    assert holder.wait(timeout=30) == 0 and last.wait(timeout=30) == 0
    tickets = [line.split()[0] for line in (tmp_path / "log").read_text().splitlines()]
    assert tickets == ["a", "a", "c", "c"]
