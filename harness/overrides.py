"""Command-line overrides: ``ablate train CONFIG key=value ...``, ``ablate sweep launch FILE key=value ...``.

An override is a dotted key and a YAML value (``train.steps=200``, ``optim.lr=6e-4``, ``seeds=[0,1]``,
``tracking.wandb=true``, ``train.tokens=null``). Overrides edit the file's data as an edit of the file would,
before the same strict loader validates it, so a misspelled key fails with the nearest valid key, the
resolved config (``config.yaml`` in the run directory) records the result, and an override that changes
the experiment changes the run id exactly as the edit would (run-time settings such as ``train.device`` or
``tracking.*`` do not).

Values: YAML scalars, lists and mappings; a number written as ``3e-4`` is a number (YAML 1.1 would read a
string), and ``HH:MM:SS`` stays a string (YAML 1.1 would read base-60 integers). A mapping or a list
replaces what the file has at that key; it is not merged into it.

Sweep files: a key that starts with a sweep field (``name``, ``base``, ``arms``, ``grid``, ``seeds``,
``evals``, ``eval_options``, ``resources``, ``compare``, ``description``) edits that field
(``arms.mamba.optim.lr=2e-3``, ``grid.optim.lr=[3e-4,6e-4]``, ``resources.time=02:00:00``); a key that
starts with a run-config section (``train``, ``model``, ``data``, ``optim``, ``schedule``, ``tracking``)
applies to every run of the sweep, after its arm (``train.steps=100``). A grid axis cannot also be set for
every run: override ``grid.<axis>`` instead. An override may only name an arm or a grid axis that the sweep
has (a typo such as ``arms.atention.optim.lr`` would otherwise add an arm that launch would train): adding
one takes a leading ``+``, as in Hydra (``+arms.mamba-big.model.preset=mini-mamba``,
``+grid.optim.lr=[1e-3,3e-3]``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from harness.config_errors import ConfigError, did_you_mean

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SEXAGESIMAL = re.compile(r"[-+]?\d+(:[0-5]?\d)+(\.\d*)?")
_KEY = re.compile(r"[^\s=]+")


@dataclass(frozen=True)
class Override:
    key: str
    value: Any
    text: str  # as typed

    @property
    def parts(self) -> list[str]:
        return self.key.split(".")


def parse_value(text: str) -> Any:
    if _SEXAGESIMAL.fullmatch(text.strip()):
        return text.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"value {text!r} is not valid YAML: {e}") from None
    return _numbers(value)


def _numbers(value: Any) -> Any:
    """Strings that spell numbers (YAML 1.1 reads ``3e-4`` as one) become floats, at any depth."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def parse_overrides(items: Sequence[str]) -> list[Override]:
    """``["train.steps=200", ...]`` -> overrides; a malformed item raises ConfigError."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not _KEY.fullmatch(key) or any(not p for p in key.split(".")):
            raise ConfigError(
                f"override {item!r} is not key=value with a dotted key (e.g. train.steps=200, optim.lr=6e-4)"
            )
        out.append(Override(key, parse_value(text), item))
    return out


def _descend(node: dict, parts: list[str], override: Override) -> tuple[dict | list, str | int]:
    """The container and key that ``parts`` name under ``node``, creating mappings on the way. A mapping
    key that itself holds dots (a grid axis ``optim.lr``, an arm ``1.3b``) matches when it exists."""
    i = 0
    while True:
        rest = parts[i:]
        if isinstance(node, dict):
            # the longest run of parts that names an existing key wins
            key = next(
                (".".join(rest[:n]) for n in range(len(rest), 0, -1) if ".".join(rest[:n]) in node), None
            )
            key = key if key is not None else rest[0]
            i += len(key.split("."))
            if i == len(parts):
                return node, key
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict | list):
                where = ".".join(parts[:i])
                raise ConfigError(f"'{where}' is {child!r}, not a mapping", key=override.key)
            node = child
        else:  # a list: the part is an index
            part = rest[0]
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"'{part}' is not an index of the list at '{'.'.join(parts[:i])}' (0..{len(node) - 1})",
                    key=override.key,
                )
            i += 1
            if i == len(parts):
                return node, int(part)
            node = node[int(part)]


def set_value(data: dict, parts: list[str], override: Override) -> None:
    container, key = _descend(data, parts, override)
    container[key] = copy.deepcopy(override.value)


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override], schema: type) -> dict[str, Any]:
    """A copy of a config's data with ``overrides`` set; each must start with a field of the dataclass
    ``schema`` (the run config). Call within :func:`blamed`, which names the override in errors."""
    out = copy.deepcopy(data)
    fields = [f.name for f in dataclasses.fields(schema)]
    for ov in overrides:
        if ov.parts[0] not in fields:
            raise ConfigError(
                f"unknown key '{ov.parts[0]}' in {schema.__name__}."
                f"{did_you_mean(ov.parts[0], fields)} Valid keys: {', '.join(sorted(fields))}",
                key=ov.key,
            )
        set_value(out, ov.parts, ov)
    return out


def apply_sweep_overrides(
    data: dict[str, Any], overrides: Sequence[Override], sweep_schema: type, run_schema: type
) -> dict[str, Any]:
    """A copy of a sweep file's data with ``overrides`` set: a key that starts with a field of
    ``sweep_schema`` edits it, one that starts with a field of ``run_schema`` applies to every run (see
    the module docstring). Call within :func:`blamed`."""
    out = copy.deepcopy(data)
    sweep_fields = [f.name for f in dataclasses.fields(sweep_schema)]
    run_fields = [f.name for f in dataclasses.fields(run_schema) if f.name != "name"]
    for ov in overrides:
        adding = ov.key.startswith("+")
        parts = ov.parts if not adding else ov.key[1:].split(".")
        head = parts[0]
        if adding and (head not in ("arms", "grid") or len(parts) < 2):
            raise ConfigError(
                "a leading '+' adds an arm or a grid axis (+arms.NAME.KEY=VALUE, +grid.AXIS=[...]); other "
                "keys are set without it",
                key=ov.key,
            )
        if head in ("arms", "grid") and len(parts) > 1:
            _check_member(out, head, parts, ov, adding)
        if head == "grid" and len(parts) > 1:
            out["grid"][".".join(parts[1:])] = copy.deepcopy(ov.value)
        elif head in sweep_fields:
            set_value(out, parts, ov)
        elif head in run_fields:
            if ov.key in (out.get("grid") or {}):
                raise ConfigError(
                    f"'{ov.key}' is an axis of the sweep's grid; override grid.{ov.key}=[...] instead",
                    key=ov.key,
                )
            out.setdefault("base", {})
            set_value(out["base"], ov.parts, ov)
            for arm, arm_data in (out.get("arms") or {}).items():
                if isinstance(arm_data, dict):
                    set_value(arm_data, ov.parts, ov)
                elif arm_data is None:
                    out["arms"][arm] = {}
                    set_value(out["arms"][arm], ov.parts, ov)
        else:
            valid = sorted(sweep_fields + run_fields)
            raise ConfigError(
                f"unknown key '{head}': neither a sweep field nor a run-config section."
                f"{did_you_mean(head, valid)} Valid keys: {', '.join(valid)}",
                key=ov.key,
            )
    return out


def _check_member(data: dict, field: str, parts: list[str], ov: Override, adding: bool) -> None:
    """An override of ``arms.NAME...`` / ``grid.AXIS`` names one the sweep has, unless it adds one (``+``);
    ConfigError with the nearest name otherwise."""
    members = data.setdefault(field, {})
    if not isinstance(members, dict):
        raise ConfigError(f"the sweep's {field} is not a mapping", key=ov.key)
    name = ".".join(parts[1:]) if field == "grid" else parts[1]
    what = "grid axis" if field == "grid" else "arm"
    if name in members and adding:
        raise ConfigError(f"the sweep already has the {what} '{name}'; drop the leading '+'", key=ov.key)
    if name not in members and not adding:
        have = ", ".join(members) or "none"
        raise ConfigError(
            f"the sweep has no {what} '{name}'.{did_you_mean(name, list(members))} Its {field}: {have}. "
            f"To add one, write +{field}.{name}{'' if field == 'grid' else '.KEY'}=...",
            key=ov.key,
        )


def describe(source: str, overrides: Sequence[Override]) -> str:
    """``run.yaml`` -> ``run.yaml with train.steps=5, optim.lr=1e-3`` (for error messages and records)."""
    if not overrides:
        return source
    return f"{source} with {', '.join(ov.text for ov in overrides)}"


@contextlib.contextmanager
def blamed(source: str, overrides: Sequence[Override]) -> Iterator[None]:
    """Re-raise a ConfigError from validating overridden data with the override it comes from as its
    source (when its key is that override's key, or inside it), else the file with its overrides."""
    try:
        yield
    except ConfigError as e:
        if not overrides or getattr(e, "blamed", False):
            raise
        key = e.key or ""
        culprit = next(
            (
                ov
                for ov in overrides
                if key == ov.key
                or key.endswith("." + ov.key)
                or key.startswith(ov.key + ".")
                or (key and ov.key.startswith(key + "."))
                or f".{ov.key}." in f".{key}."
            ),
            None,
        )
        where = f"override {culprit.text!r} (on {source})" if culprit else describe(source, overrides)
        err = ConfigError(e.message, source=where, key=e.key)
        err.blamed = True
        raise err from None


def as_overrides(overrides: Sequence[str | Override]) -> list[Override]:
    """Overrides given as ``key=value`` strings or already parsed, parsed."""
    return [o if isinstance(o, Override) else parse_overrides([o])[0] for o in overrides]
