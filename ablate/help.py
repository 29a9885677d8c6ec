"""How ``ablate ... --help`` reads: every option says its default, plain text only.

:func:`finish_parser` gives the whole command tree (sub-commands added by other modules included) one
formatter, which appends ``(default: X)`` to an option's help unless the help already says what the default
is, or the option has none (a flag, or ``None`` meaning "not given": the help then says what happens).
:func:`walk` yields every (command, parser) pair, for the tests that keep this true.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def walk(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` for the parser and every sub-command below it (``"sweep launch"``, ...)."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{prefix} {name}".strip())


def finish_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and all its sub-commands :class:`HelpFormatter`; returns ``parser``."""
    for _, p in walk(parser):
        p.formatter_class = HelpFormatter
    return parser
