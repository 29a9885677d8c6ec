"""The one gate every user YAML passes (sweep files, run configs, model configs, ``--option`` values).

:func:`load_yaml` / :func:`parse_yaml` refuse, naming the file and where, a file that is too large
(:data:`MAX_YAML_BYTES`), not UTF-8 (byte offset, line and column), nested too deeply, expanding past
:data:`MAX_YAML_NODES` values through aliases (a "billion laughs"), recursive aliases, or repeating a key in
one mapping (YAML would silently keep the last one), before anything is built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.config_errors import ConfigError, join_key

# ------------------------------------------------------------------------------------------ the YAML gate
MAX_YAML_BYTES = 256 * 1024  # sweep files are a few KB; a bigger file is a mistake (or an attack)

MAX_YAML_NODES = 100_000  # values after alias expansion

MAX_YAML_DEPTH = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _yaml_where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


def _yaml_error(e: yaml.YAMLError) -> str:
    """A one-line description of a PyYAML error (its own text spans several lines)."""
    if isinstance(e, yaml.reader.ReaderError):
        return f"invalid YAML: character #x{e.character:04x} at position {e.position}: {e.reason}"
    if isinstance(e, yaml.MarkedYAMLError):
        text = f"invalid YAML at {_yaml_where(e.problem_mark)}: {e.problem}"
        if e.context:
            text += f" ({e.context} at {_yaml_where(e.context_mark)})"
        return text
    return f"invalid YAML: {' '.join(str(e).split())}"


def _scalar_key(node: yaml.Node) -> Any:
    return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else None


def _check_nodes(root: yaml.Node, source: str | None) -> None:
    """Refuse duplicate keys, recursive aliases, deep nesting and alias expansion past the limits; walks the
    composed node graph once (an aliased node is counted, not walked, again)."""
    sizes: dict[int, int] = {}
    walking: set[int] = set()

    def walk(node: yaml.Node, path: str, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in walking:
            raise ConfigError(
                f"a recursive alias (an anchor used inside itself) at {_yaml_where(node.start_mark)}",
                source=source,
                key=path or None,
            )
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(
                f"nested deeper than {MAX_YAML_DEPTH} levels ({_yaml_where(node.start_mark)})",
                source=source,
                key=path or None,
            )
        walking.add(id(node))
        size = 1
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += walk(item, f"{path}[{i}]", depth + 1)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = _scalar_key(key_node)
                name = str(key_node.value) if key is not None else "?"
                if key is not None and key_node.tag != _MERGE_TAG:
                    if key in seen:
                        raise ConfigError(
                            f"duplicate key '{name}' ({_yaml_where(key_node.start_mark)}; first at "
                            f"{_yaml_where(seen[key].start_mark)}): YAML would silently keep the last one; "
                            "remove one of them",
                            source=source,
                            key=join_key(path, name),
                        )
                    seen[key] = key_node
                size += walk(key_node, path, depth + 1)
                size += walk(value_node, join_key(path, name), depth + 1)
        walking.discard(id(node))
        sizes[id(node)] = size
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"expands to more than {MAX_YAML_NODES:,} values (through aliases, at "
                f"{_yaml_where(node.start_mark)}); a config is never that large",
                source=source,
                key=path or None,
            )
        return size

    walk(root, "", 0)


def parse_yaml(text: str, source: str | None = None, *, mapping: bool = True) -> Any:
    """The gate's parser: YAML text to plain data, refusing (ConfigError naming ``source``) what
    :func:`load_yaml` documents. ``mapping``: the document must be a mapping (empty: ``{}``)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ConfigError(
            f"larger than {MAX_YAML_BYTES // 1024} KiB; a config is never that large", source=source
        )
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        loader.name = source or "<text>"
        node = loader.get_single_node()
        if node is None:
            data = None
        else:
            _check_nodes(node, source)
            data = loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(e), source=source) from None
    except RecursionError:
        raise ConfigError(f"nested deeper than {MAX_YAML_DEPTH} levels", source=source) from None
    except (ValueError, OverflowError, TypeError) as e:  # a scalar that does not construct (a 5000-digit int)
        raise ConfigError(f"invalid value: {' '.join(str(e).split())}", source=source) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not mapping:
        return data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", source=source)
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a user's YAML mapping through the one gate every config file passes (sweep files, run
    configs, model configs, run directories' config.yaml): the file must exist and be a file, be at most
    :data:`MAX_YAML_BYTES`, be UTF-8 (else the byte offset, line and column of the first bad byte), and
    parse (:func:`parse_yaml`: no duplicate keys, bounded alias expansion and nesting). Every refusal is a
    ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a directory, not a YAML file", source=path)
    if not path.exists():
        raise ConfigError("file not found", source=path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(
                f"is {size:,} bytes, larger than {MAX_YAML_BYTES // 1024} KiB; a config is never that large",
                source=path,
            )
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot be read: {e.strerror or e}", source=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line}, column "
            f"{column}); save it as UTF-8",
            source=path,
        ) from None
    return parse_yaml(text, str(path))
