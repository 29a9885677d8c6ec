"""The one error a user's mistake raises (:class:`ConfigError`), and the suggestions it carries.

Why one type: every command catches it at the top (``ablate``: one line naming the file, the key and the
value, exit status 2) and every check below raises it, so a mistake in a config, a sweep file, an override
or a command-line option never reaches the user as a traceback.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

MAX_MESSAGE_CHARS = 2000


class ConfigError(ValueError):
    """A user's configuration mistake. The CLI prints its message without a traceback."""

    def __init__(self, message: str, *, source: str | Path | None = None, key: str | None = None):
        if len(message) > MAX_MESSAGE_CHARS:  # a huge value quoted in a message must not flood the terminal
            message = message[: MAX_MESSAGE_CHARS - 30] + " ... (message shortened)"
        if key is not None and len(key) > 200:
            key = key[:196] + " ..."
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


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: what a message quotes of a value that may be huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def join_key(path: str, key: str) -> str:
    """The dotted key path of ``key`` under ``path`` (``model`` + ``d_ff`` -> ``model.d_ff``)."""
    return f"{path}.{key}" if path else key
