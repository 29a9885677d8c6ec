"""Strict construction of nested dataclass configs from plain dicts (YAML, JSON, CLI overrides), and the
identity of a config (what makes two runs the same experiment).

Why: a typo in a config key (``n_kv_head`` for ``n_kv_heads``) must never be silently ignored in an
experiment that costs GPU-hours. Every dataclass config in the harness is built through
:func:`from_dict`, which rejects unknown keys and wrong types with a :class:`ConfigError` that names the
source file, the dotted key path, the offending value, the valid keys and the nearest valid key. Numbers
must be finite, and a field declared with :func:`bounded` must lie in its range (the message says which).
A field may have a reader of its own (``metadata={"resolve": f}``: a model section with a preset).

:func:`identity` is the config with its run-time fields (:func:`runtime_field`: device, kernels, ...) at
their defaults, the input of run ids (:func:`short_hash`); a field added after runs were made
(:func:`later_field`) is left out while it holds its default, so those runs keep their ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

from harness.config_errors import ConfigError, did_you_mean, join_key, shown

T = TypeVar("T")


def _num(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid range of a numeric field (:func:`bounded`): lower bound ``ge`` or ``gt``, upper ``le`` or
    ``lt``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """``> 0``, ``>= 1``, ``<= 8``, ``in [0, 1)``."""
        low = (
            f"[{_num(self.ge)}"
            if self.ge is not None
            else f"({_num(self.gt)}"
            if self.gt is not None
            else None
        )
        high = (
            f"{_num(self.le)}]"
            if self.le is not None
            else f"{_num(self.lt)})"
            if self.lt is not None
            else None
        )
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "a number"


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    runtime: bool = False,
    **kwargs: Any,
) -> Any:
    """A numeric config field with a valid range, checked by :func:`from_dict` with the range in the
    message (``must be >= 0, got -1``). ``runtime`` makes it a :func:`runtime_field` as well."""
    metadata = {"range": Range(ge=ge, gt=gt, le=le, lt=lt)}
    if runtime:
        metadata["runtime"] = True
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _non_finite(value: Any) -> bool:
    """A float (or a numeric string, which float fields accept) that is nan or infinite."""
    if isinstance(value, str) and len(value) < 64:
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, float) and not math.isfinite(value)


def _check_range(f: dataclasses.Field, value: Any, path: str, source: str | None) -> None:
    rng = f.metadata.get("range")
    if rng is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number {rng.describe()}, got {value}", source=source, key=path)
    if not rng.contains(value):
        raise ConfigError(f"must be {rng.describe()}, got {shown(value)}", source=source, key=path)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """Check (and minimally coerce) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), path, source)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"value {shown(value)} is not one of {', '.join(repr(a) for a in allowed)}",
                source=source,
                key=path,
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a mapping of {tp.__name__} fields, got {type(value).__name__} {shown(value)}",
                source=source,
                key=path,
            )
        return from_dict(tp, value, source=source, path=path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"expected a list, got {type(value).__name__} {shown(value)}", source=source, key=path
            )
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        return _coerce_mapping(value, typing.get_args(tp) or (Any, Any), path, source)
    scalar = _SCALARS.get(tp)
    return scalar(value, path, source) if scalar is not None else value


def _coerce_union(value: Any, args: tuple, path: str, source: str | None) -> Any:
    """``X | Y | None``: None where allowed, else the first member that accepts the value."""
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
        f"value {shown(value)} is not a valid {' | '.join(_type_name(a) for a in args)}",
        source=source,
        key=path,
    )


def _coerce_mapping(value: Any, args: tuple, path: str, source: str | None) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(
            f"expected a mapping, got {type(value).__name__} {shown(value)}", source=source, key=path
        )
    k_tp, v_tp = args
    if k_tp is str:
        for k in value:
            if not isinstance(k, str):
                raise ConfigError(
                    f"the key {shown(k)} is a {type(k).__name__}, not a name; quote it (YAML reads 1:7 "
                    "unquoted as the number 67, and yes/no/on/off as true/false): '1:7'",
                    source=source,
                    key=join_key(path, str(k)),
                )
    return {k: _coerce(v, v_tp, join_key(path, str(k)), source) for k, v in value.items()}


def _coerce_bool(value: Any, path: str, source: str | None) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {shown(value)}", source=source, key=path)
    return value


def _coerce_int(value: Any, path: str, source: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(
            f"expected an integer, got {type(value).__name__} {shown(value)}", source=source, key=path
        )
    return value


def _coerce_float(value: Any, path: str, source: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept numeric strings.
        number = None
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(
                f"expected a number, got {type(value).__name__} {shown(value)}", source=source, key=path
            )
        value = number
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        value = math.inf
    if not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value}", source=source, key=path)
    return value


def _coerce_str(value: Any, path: str, source: str | None) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"expected a string, got {type(value).__name__} {shown(value)}", source=source, key=path
        )
    return value


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _section_hint(hints: dict[str, Any], fields: dict[str, dataclasses.Field], key: str) -> str:
    """`` Did you mean 'model.preset'?`` when ``key`` is a key of one of the sections (a dataclass field, or
    a mapping field whose metadata lists its ``keys``)."""
    for name, f in fields.items():
        keys = f.metadata.get("keys")
        if keys is None:
            tp = hints[name]
            args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_args(tp) else [tp]
            sections = [a for a in args if dataclasses.is_dataclass(a)]
            keys = [g.name for section in sections for g in dataclasses.fields(section)]
        if key in keys:
            return f" Did you mean '{name}.{key}'?"
    return ""


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
            suggestion = did_you_mean(str(key), fields) or _section_hint(hints, fields, str(key))
            raise ConfigError(
                f"unknown key '{key}' in {cls.__name__}.{suggestion} Valid keys: {', '.join(sorted(fields))}",
                source=source,
                key=join_key(path, str(key)),
            )
        if _non_finite(value):  # refused with the field's range in the message, when it has one
            _check_range(fields[key], float(value), join_key(path, str(key)), source)
        resolve = fields[key].metadata.get("resolve")
        if resolve is not None:  # a section with a reader of its own (a model section with a preset)
            kwargs[key] = resolve(value, source=source, path=join_key(path, str(key)))
            continue
        kwargs[key] = _coerce(value, hints[key], join_key(path, str(key)), source)
        _check_range(fields[key], kwargs[key], join_key(path, str(key)), source)
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ConfigError(
            f"missing key '{missing[0]}' (required in {cls.__name__}: {', '.join(required)})",
            source=source,
            key=join_key(path, missing[0]),
        )
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if getattr(e, "located", False):
            raise
        # Raised by cls's own validation: its key is relative to cls; make it absolute, add the file.
        key = join_key(path, e.key) if e.key else (path or None)
        located = ConfigError(e.message, source=source or e.source, key=key)
        located.located = True
        raise located from None
    except TypeError as e:  # a required field is missing
        raise ConfigError(str(e), source=source, key=path or None) from None


def later_field(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A config field added after runs were made with its dataclass: left out of the resolved form while it
    holds its default, so the resolved config (and the run id) of every config that does not use it stays
    what it was. A nested section takes ``default_factory=TheSection`` instead of a default."""
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


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
