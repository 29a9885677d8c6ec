"""The catalogue of named corpora: which hub dataset and which local pack each name stands for.

Named corpora (hub datasets chosen because they load with plain ``datasets.load_dataset``, without a
loading script, which datasets >= 4 no longer runs):

========  ==============================================  ==========  =================================
name      hub dataset (config) -> train / held-out split   text field  local pack (``ablate data prepare``)
========  ==============================================  ==========  =================================
c4, web   ``allenai/c4`` (``en``) -> train / validation    text        ``web``
books,    ``emozilla/pg19`` (parquet copy of DeepMind's     text        ``books``
pg19      PG-19) -> train / validation
code      ``codeparrot/codeparrot-clean-train`` -> train;   content     ``code``
          ``codeparrot/codeparrot-clean-valid`` -> train
imdb      ``stanfordnlp/imdb`` -> train / test              text        ``imdb`` (not for pretraining)
========  ==============================================  ==========  =================================

Kept apart from :mod:`harness.data.sources` (which resolves a spec to documents) so that the config
dataclasses can check corpus names without importing the resolution machinery.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class HubSplit:
    path: str
    config: str | None
    split: str


@dataclass(frozen=True)
class NamedCorpus:
    """A corpus users refer to by name: its hub dataset per role and its local pack."""

    pack: str
    text_field: str
    train: HubSplit
    validation: HubSplit
    description: str
    license: str


NAMED_CORPORA: dict[str, NamedCorpus] = {
    "c4": NamedCorpus(
        pack="web",
        text_field="text",
        train=HubSplit("allenai/c4", "en", "train"),
        validation=HubSplit("allenai/c4", "en", "validation"),
        description="C4 English web text (Raffel et al. 2020); offline: the 'web' pack",
        license="ODC-BY",
    ),
    "books": NamedCorpus(
        pack="books",
        text_field="text",
        train=HubSplit("emozilla/pg19", None, "train"),
        validation=HubSplit("emozilla/pg19", None, "validation"),
        description="PG-19 books (Rae et al. 2020), parquet copy of deepmind/pg19; offline: the 'books' pack",
        license="Apache-2.0 (dataset); public-domain texts",
    ),
    "code": NamedCorpus(
        pack="code",
        text_field="content",
        train=HubSplit("codeparrot/codeparrot-clean-train", None, "train"),
        validation=HubSplit("codeparrot/codeparrot-clean-valid", None, "train"),
        description="CodeParrot clean Python from GitHub (train/valid repos); offline: the 'code' pack",
        license="per-file licenses (permissive/copyleft mix)",
    ),
    "imdb": NamedCorpus(
        pack="imdb",
        text_field="text",
        train=HubSplit("stanfordnlp/imdb", None, "train"),
        validation=HubSplit("stanfordnlp/imdb", None, "test"),
        description="IMDB reviews with labels (Maas et al. 2011), for ICL evals, not pretraining",
        license="research use",
    ),
}
ALIASES = {"web": "c4", "pg19": "books", "pg-19": "books"}


def canonical_name(name: str) -> str | None:
    """The named corpus a name refers to (resolving aliases), or None."""
    name = ALIASES.get(name, name)
    return name if name in NAMED_CORPORA else None


def all_corpus_names() -> list[str]:
    return list(NAMED_CORPORA) + list(ALIASES)


def suggest_corpus(name: str) -> str | None:
    """The closest corpus name (a looser cutoff than config keys: corpus names are short, 'c5' -> 'c4')."""
    found = difflib.get_close_matches(name.lower(), all_corpus_names(), n=1, cutoff=0.5)
    return found[0] if found else None
