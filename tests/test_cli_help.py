"""``ablate --help`` everywhere: every option explains itself and shows its default, no reST or Markdown
markup; ``ablate presets`` lists parameters and pattern per preset, filtered by family."""

from __future__ import annotations

import argparse
import re

import pytest

from ablate.cli import build_parser, main
from ablate.help import walk
from ablate.plan import FAMILY_NAMES
from harness.presets import FAMILIES, PAPER_MODELS, family_preset_names

MARKUP = re.compile(r"``|`|:class:|:func:|:mod:|\*\*")


def test_every_option_has_help_with_its_default_and_no_markup():
    parser = build_parser()
    missing, no_default = [], []
    for command, sub in walk(parser):
        text = sub.format_help()
        assert not MARKUP.search(text), (command, MARKUP.search(text).group(0), text)
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = f"{command or 'ablate'} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(name)
            shown = sub._get_formatter()._get_help_string(action)
            meaningful = action.default not in (None, False, [], argparse.SUPPRESS)
            if action.option_strings and meaningful and "default" not in shown.lower():
                no_default.append(name)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help hides the default: {no_default}"
    assert "(default: h100)" in " ".join(walk_help(parser, "plan").split())
    bench = " ".join(walk_help(parser, "bench scan").split())
    assert "(default: tiny-1to7)" in bench and "(default: 256)" in bench


def walk_help(parser: argparse.ArgumentParser, command: str) -> str:
    return dict(walk(parser))[command].format_help()


def test_presets_show_size_and_pattern_per_family(capsys):
    assert tuple(FAMILIES) == FAMILY_NAMES
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in [*PAPER_MODELS, *family_preset_names()]:
        assert re.search(rf"^  {re.escape(name)} +\S+ +\S+  \S+$", out, re.M), name
    assert re.search(r"^  jamba-v0\.1 +51\.\d\dB +12\.\d\dB  \(M-MEM-ME\*-MEM-ME\)x4$", out, re.M), out
    assert main(["presets", "--family", "tiny"]) == 0
    tiny = capsys.readouterr().out
    assert "tiny-1to7-moe" in tiny and "mini-" not in tiny and "jamba-v0.1" not in tiny
    with pytest.raises(SystemExit):
        main(["presets", "--family", "huge"])
