"""The benchmark records of a folder (``results/bench/*.json``, written by ``ablate bench``), checked.

Figures and tables of speed claims are only as good as the records under them, so a record is read strictly:
every ``*.json`` directly in the folder must be one ``ablate bench prefill|decode|context|train|scale|scan``
record with the fields the report draws on, of the right types, else :class:`ConfigError` names the file,
the key (``rows[2].tokens_per_s``) and the value. Nothing is guessed or skipped silently. The one allowance is
history: prefill rows written before ``--against`` existed have no ``implementation`` and are ours. Only the
top level is read, so a report folder inside the records' folder is not a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config_errors import ConfigError

NUMBER = (int, float)
PROVENANCE = {"device": str, "versions": dict, "commit": (str, type(None)), "time": str}
# kind -> (record fields, fields of each row, list key of the rows); a row with "error" or "skipped" needs
# only its identifying fields (the first of each row tuple).
KINDS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "prefill": (
        {"preset": str, "dtype": str},
        {
            "context": int,
            "batch": int,
            "tokens_per_s": NUMBER,
            "peak_bytes": (int, type(None)),
            "weights_bytes": int,
            "kv_cache_bytes": int,
            "mamba_state_bytes": int,
        },
        "rows",
    ),
    "decode": (
        {"preset": str, "dtype": str, "cuda_graphs": bool},
        {
            "batch": int,
            "prompt": int,
            "new": int,
            "ms_per_step": NUMBER,
            "decode_tokens_per_s": NUMBER,
            "end_to_end_tokens_per_s": NUMBER,
        },
        "rows",
    ),
    "context": (
        {
            "preset": str,
            "dtype": str,
            "budget_bytes": int,
            "criterion": str,
            "max_context": (int, type(None)),
            "hit_limit": bool,
            "predicted_max_context": (int, type(None)),
        },
        {"context": int, "fits": bool},
        "probes",
    ),
    "train": (
        {"config": dict},
        {"model": str, "tokens_per_s": NUMBER, "step_ms": NUMBER, "params": int, "loss": NUMBER},
        "results",
    ),
    "scale": (
        {"config": dict},
        {
            "strategy": str,
            "processes": int,
            "tokens_per_s": NUMBER,
            "tokens_per_s_per_process": NUMBER,
            "step_s": NUMBER,
        },
        "results",
    ),
    "scan": (
        {"preset": str, "config": dict},
        {
            "backend": str,
            "fwd_ms": NUMBER,
            "bwd_ms": NUMBER,
            "total_ms": NUMBER,
            "tokens_per_s": NUMBER,
            "speedup": NUMBER,
            "first_call_s": NUMBER,
            "peak_gib": (*NUMBER, type(None)),
            "max_rel_diff": dict,
        },
        "rows",
    ),
}
# kind -> the fields its ``config`` mapping must have (train and scale records name their preset there).
CONFIG_FIELDS: dict[str, dict[str, Any]] = {
    "train": {"preset": str, "batch": int, "seq_len": int},
    "scale": {"preset": str, "batch_per_process": int, "seq_len": int},
    "scan": {"d_inner": int, "d_state": int, "batch": int, "seq_len": int, "dtype": str},
}
# The leading row fields an error row keeps.
IDENTIFYING = {"prefill": 2, "decode": 1, "context": 2, "train": 1, "scale": 2, "scan": 1}


@dataclass(frozen=True)
class BenchRecord:
    """One record: where it came from, its kind, the arm (preset) it measured and the record itself."""

    path: Path
    kind: str
    preset: str
    data: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data[KINDS[self.kind][2]]

    @property
    def prefill_pass(self) -> str:
        """How our prefill ran: one pass, or chunks of N tokens (``--prefill-chunk``; records written before
        the option existed prefilled in one pass)."""
        chunk = self.data.get("prefill_chunk")
        return "one pass" if not chunk else f"{chunk:,}-token chunks"

    def implementation(self, row: dict[str, Any]) -> str:
        """A row's implementation; ours names its prefill chunks when it had some (anchors: one pass)."""
        name = row.get("implementation", "ours")
        return f"ours, {self.prefill_pass}" if name == "ours" and self.data.get("prefill_chunk") else name


def _type_name(types: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("null" if t is type(None) else names.get(t, t.__name__) for t in types)


def _check(path: Path, where: str, value: Any, types: Any) -> None:
    accepted = types if isinstance(types, tuple) else (types,)
    # JSON true/false are Python bools, which are ints: only a field that asks for a bool takes one
    wrong_bool = isinstance(value, bool) and bool not in accepted
    if wrong_bool or not isinstance(value, accepted):
        raise ConfigError(
            f"expected {_type_name(types)}, got {json.dumps(value)[:80]}", source=path, key=where
        )


def _fields(path: Path, mapping: Any, fields: dict[str, Any], prefix: str) -> None:
    _check(path, prefix.rstrip(".") or "(top level)", mapping, dict)
    for key, types in fields.items():
        if key not in mapping:
            raise ConfigError("missing (is this an `ablate bench` record?)", source=path, key=prefix + key)
        _check(path, prefix + key, mapping[key], types)


def read_record(path: Path) -> BenchRecord:
    """One record, checked (see the module docstring)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"not a readable JSON benchmark record: {e}", source=path) from e
    _check(path, "(top level)", data, dict)
    kind = data.get("kind")
    if kind not in KINDS:
        raise ConfigError(
            f"unknown benchmark kind {json.dumps(kind)}; expected one of {', '.join(KINDS)}",
            source=path,
            key="kind",
        )
    fields, row_fields, rows_key = KINDS[kind]
    _fields(path, data, {**PROVENANCE, **fields, rows_key: list}, "")
    keep = IDENTIFYING[kind]
    for i, row in enumerate(data[rows_key]):
        failed = isinstance(row, dict) and ("error" in row or "skipped" in row)
        needed = dict(list(row_fields.items())[:keep]) if failed else row_fields
        _fields(path, row, needed, f"{rows_key}[{i}].")
        if kind == "prefill":
            _check(path, f"rows[{i}].implementation", row.get("implementation", "ours"), str)
    config_fields = CONFIG_FIELDS.get(kind, {})
    if config_fields:
        _fields(path, data["config"], config_fields, "config.")
    preset = data["config"]["preset"] if "preset" in config_fields else data["preset"]
    return BenchRecord(path, kind, preset, data)


def load_records(folder: str | Path) -> list[BenchRecord]:
    """Every record directly in ``folder``, in file-name order; refuses a folder without any."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of benchmark records (results/bench/*.json)")
    records = [read_record(path) for path in sorted(folder.glob("*.json"))]
    if not records:
        raise ConfigError(f"no benchmark records (*.json) in {folder}; write some with `ablate bench ...`")
    return records
