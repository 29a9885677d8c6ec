"""Readers for what the tracking integrations write, with their own libraries' formats (for the tests)."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag -> [(step, value)] as TensorBoard itself reads the event files (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(path: Path):
    """The protobuf records of a ``run-<id>.wandb`` file: W&B's header (":W&B", magic, version) and then
    LevelDB-style log blocks of 32 KiB, each record chunk prefixed by crc32, length and type."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            payload = chunk
        elif kind == 2:  # first
            pending = chunk
            continue
        elif kind == 3:  # middle
            pending += chunk
            continue
        else:  # last
            payload, pending = pending + chunk, b""
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def wandb_offline_runs(run_dir: Path) -> list[dict]:
    """Each ``offline-run-*`` folder of a run directory, oldest first: W&B run id, project, group, name,
    config keys and the history rows ({metric: value, "_step": step})."""
    runs = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        (file,) = folder.glob("run-*.wandb")
        info: dict = {"folder": folder, "history": [], "config": {}}
        for record in _wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                r = record.run
                info.update(id=r.run_id, project=r.project, group=r.run_group, name=r.display_name)
                info["config"] = {
                    (u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.config.update
                }
            elif kind == "history":
                info["history"].append(
                    {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
                )
        runs.append(info)
    return runs
