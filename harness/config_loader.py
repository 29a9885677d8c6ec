"""Strict construction of nested dataclass configs from plain dicts (YAML, JSON, CLI overrides).

Why: a typo in a config key (``n_kv_head`` for ``n_kv_heads``) must never be silently ignored in an
experiment that costs GPU-hours. Every dataclass config in the harness is built through
:func:`from_dict`, which rejects unknown keys and wrong types with a :class:`ConfigError` that names the
source file, the dotted key path, the offending value, the valid keys and the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A user's configuration mistake. The CLI prints its message without a traceback."""

    def __init__(self, message: str, *, source: str | Path | None = None, key: str | None = None):
        self.message = message
        self.source = str(source) if source is not None else None
        self.key = key
        where = []
        if self.source:
            where.append(self.source)
        if key:
            where.append(f"key '{key}'")
        prefix = (": ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


def nearest(name: str, candidates: typing.Iterable[str]) -> str | None:
    """The closest candidate to a misspelled name, or None when nothing is close."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: str, candidates: typing.Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or an empty string when nothing is close."""
    hint = nearest(name, candidates)
    return f" Did you mean '{hint}'?" if hint else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """Check (and minimally coerce) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:  # Optional[X]: X's own error is the informative one
            return _coerce(value, non_none[0], path, source)
        for arg in non_none:
            try:
                return _coerce(value, arg, path, source)
            except ConfigError:
                continue
        raise ConfigError(
            f"value {value!r} is not a valid {' | '.join(_type_name(a) for a in args)}",
            source=source,
            key=path,
        )
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"value {value!r} is not one of {', '.join(repr(a) for a in allowed)}",
                source=source,
                key=path,
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a mapping of {tp.__name__} fields, got {type(value).__name__} {value!r}",
                source=source,
                key=path,
            )
        return from_dict(tp, value, source=source, path=path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"expected a list, got {type(value).__name__} {value!r}", source=source, key=path
            )
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a mapping, got {type(value).__name__} {value!r}", source=source, key=path
            )
        _k, v_tp = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, v_tp, _join(path, str(k)), source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", source=source, key=path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(
                f"expected an integer, got {type(value).__name__} {value!r}", source=source, key=path
            )
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept numeric strings.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(
                f"expected a number, got {type(value).__name__} {value!r}", source=source, key=path
            )
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(
                f"expected a string, got {type(value).__name__} {value!r}", source=source, key=path
            )
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, source: str | Path | None = None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursively, rejecting unknown keys and wrong types.

    A ``ConfigError`` raised by the dataclass's own ``__post_init__`` validation is re-raised with its key
    made absolute (``moe.top_k``) and the source file attached.
    """
    source = str(source) if source is not None else None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", source=source, key=path or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            suggestion = did_you_mean(str(key), fields)
            raise ConfigError(
                f"unknown key '{key}' in {cls.__name__}.{suggestion} Valid keys: {', '.join(sorted(fields))}",
                source=source,
                key=_join(path, str(key)),
            )
        kwargs[key] = _coerce(value, hints[key], _join(path, str(key)), source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if getattr(e, "located", False):
            raise
        # Raised by cls's own validation: its key is relative to cls; make it absolute, add the file.
        key = _join(path, e.key) if e.key else (path or None)
        located = ConfigError(e.message, source=source or e.source, key=key)
        located.located = True
        raise located from None
    except TypeError as e:  # a required field is missing
        raise ConfigError(str(e), source=source, key=path or None) from None


def later_field(default: Any, **kwargs: Any) -> Any:
    """A config field added after runs were made with its dataclass: left out of the resolved form while it
    holds its default, so the resolved config (and the run id) of every config that does not use it stays
    what it was."""
    return dataclasses.field(default=default, metadata={"omit_if_default": True}, **kwargs)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _present_fields(obj: Any) -> list[dataclasses.Field]:
    """The fields of a dataclass config that its resolved form holds (see :func:`later_field`)."""
    return [
        f
        for f in dataclasses.fields(obj)
        if not (f.metadata.get("omit_if_default") and getattr(obj, f.name) == _default(f))
    ]


def to_dict(obj: Any) -> Any:
    """Plain-data form of a (nested) dataclass config, suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in _present_fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def runtime_field(default: Any = dataclasses.MISSING, *, later: bool = False, **kwargs: Any) -> Any:
    """A config field that says *how* something runs (device, kernel backend, compile flag, an evaluation's
    batch size), not *what* runs: :func:`identity` treats it as if it had its default, so changing it never
    makes a new experiment (a run trained on a GPU keeps its id when resumed or evaluated on a CPU).

    ``later``: also a :func:`later_field` (left out of the resolved form at its default), and then left out of
    :func:`identity` whatever its value, so adding it changes no existing run id. Takes ``default_factory``
    like ``dataclasses.field``."""
    metadata = {"runtime": True, **({"omit_if_default": True} if later else {})}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def is_runtime(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("runtime"))


def identity(obj: Any) -> Any:
    """:func:`to_dict` with every :func:`runtime_field` at its default: what makes two configs the same
    experiment (the input of run ids and evaluation-spec hashes)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(f.default) if is_runtime(f) else identity(getattr(obj, f.name))
            for f in _present_fields(obj)
            if not (is_runtime(f) and f.metadata.get("omit_if_default"))  # absent at its default: always
        }
    if isinstance(obj, (list, tuple)):
        return [identity(v) for v in obj]
    if isinstance(obj, dict):
        return {k: identity(v) for k, v in obj.items()}
    return obj


def short_hash(data: Any) -> str:
    """A stable 12-hex-digit fingerprint of plain data (sorted keys)."""
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into a ConfigError that names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", source=path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", source=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", source=path)
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
