"""`ablate data ...` / `ablate tokenizer ...` registration and the tokenizer-train command on a tiny pack."""

import argparse

import pytest

from harness.data.cli import add_data_commands
from harness.data.packs import write_pack
from harness.data.tokenizer import load_tokenizer


def _parser():
    parser = argparse.ArgumentParser(prog="ablate")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_commands_are_registered():
    args = _parser().parse_args(
        ["data", "prepare", "--packs", "web,code", "--max-mb", "5", "--data-dir", "/x"]
    )
    assert (args.packs, args.max_mb, args.data_dir) == ("web,code", 5.0, "/x")
    assert args.func.__name__ == "cmd_data_prepare"
    args = _parser().parse_args(
        ["tokenizer", "train", "--corpus", "web", "--vocab-size", "1000", "--out", "d"]
    )
    assert (args.corpus, args.vocab_size, args.out) == ("web", 1000, "d")
    with pytest.raises(SystemExit):
        _parser().parse_args(["data", "prepare", "--bogus"])


def test_unknown_pack_is_a_config_error(tmp_path):
    from harness.config_errors import ConfigError

    args = _parser().parse_args(["data", "prepare", "--packs", "webb", "--data-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="did you mean web"):
        args.func(args)


def test_show_and_tokenizer_train(tmp_path, capsys):
    args = _parser().parse_args(["data", "show", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert "ablate data prepare" in capsys.readouterr().out

    docs = [f"document {i}: the 2024 numbers are {i * 7} and {i * 13}; more words here." for i in range(300)]
    write_pack(tmp_path, "tiny", {"train": docs, "validation": docs[:3]})
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--corpus", "tiny", "--vocab-size", "300", "--out", str(out)]
    args = _parser().parse_args([*argv, "--max-mb", "1", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    tok = load_tokenizer(out)
    assert tok.kind == "bpe" and tok.vocab_size <= 300
    assert [tok.decode([i]) for i in tok.encode("2024")] == ["2", "0", "2", "4"]
    args = _parser().parse_args(["data", "show", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert "tiny" in capsys.readouterr().out
