"""Model config: the layer pattern, the paper's shorthand, and errors that name the key and the file."""

import pytest

from harness.config_errors import ConfigError
from harness.config_schema import from_dict
from harness.model.config import (
    LayoutConfig,
    ModelConfig,
    compact_pattern,
    describe_pattern,
    expand_layout,
    normalize_pattern,
)
from harness.yaml_gate import load_yaml


def model(**kw):
    base = dict(vocab_size=32, d_model=16, d_ff=32, attention=dict(n_heads=2))
    base.update(kw)
    return from_dict(ModelConfig, base)


@pytest.mark.parametrize(
    "layout, expected",
    [
        (dict(layers=8, attn_mamba="1:7"), "M-M-M-M-*-M-M-M-"),
        (dict(layers=8, attn_mamba="1:3"), "M-M-*-M-M-M-*-M-"),
        (dict(layers=4, attn_mamba="1:0"), "*-*-*-*-"),
        (dict(layers=4, attn_mamba="0:1"), "M-M-M-M-"),
        (dict(layers=8, attn_mamba="1:7", moe_every=2), "M-MEM-ME*-MEM-ME"),
        (dict(layers=4, attn_mamba="1:3", attn_offset=0, moe_every=2, moe_offset=0), "*EM-MEM-"),
        (dict(layers=6, attn_mamba="2:1", attn_offset=1), "M-*-*-M-*-*-"),
    ],
)
def test_layout_expands_to_pattern(layout, expected):
    assert expand_layout(LayoutConfig(**layout)) == expected


def test_jamba_block_and_repetition():
    assert normalize_pattern("(M-MEM-ME*-MEM-ME)x4") == "M-MEM-ME*-MEM-ME" * 4
    assert normalize_pattern("((M-)x3*-)x2") == "M-M-M-*-M-M-M-*-"
    assert compact_pattern("M-MEM-ME*-MEM-ME" * 4) == "(M-MEM-ME*-MEM-ME)x4"
    assert compact_pattern("M-*E") == "M-*E"


def test_describe_recovers_shorthand():
    cfg = model(layout=dict(layers=32, attn_mamba="1:7", moe_every=2), moe=dict(n_experts=16, top_k=2))
    assert describe_pattern(cfg.pattern, cfg.moe) == "l=32 a:m=1:7 (offset 4) e=2 (offset 1) n=16 K=2"
    assert describe_pattern("*-*-") == "l=2 a:m=1:0"
    assert describe_pattern("M-M-") == "l=2 a:m=0:1"
    assert "irregular" in describe_pattern("*-M-M-*-M-M-M-M-")


def test_layout_and_pattern_agree():
    a = model(layout=dict(layers=8, attn_mamba="1:7"))
    b = model(pattern="M-M-M-M-*-M-M-M-")
    assert a.pattern == b.pattern and a.layout is None
    assert a.n_layers == 8 and a.count("*") == 1


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(pattern="M-X-"), "unknown symbol 'X' at position 2"),
        (dict(pattern="MM--"), "followed by another mixer"),
        (dict(pattern="M-M"), "has no FFN after it"),
        (dict(pattern="-M"), "should start a layer with a mixer"),
        (dict(pattern=""), "the pattern is empty"),
        (dict(layout=dict(layers=10, attn_mamba="1:7")), "does not divide layers = 10"),
        (dict(layout=dict(layers=8, attn_mamba="one to seven")), "attn_mamba must look like '1:7'"),
        (dict(layout=dict(layers=8, attn_mamba="1:3", attn_offset=4)), "attn_offset = 4"),
        (
            dict(pattern="M-ME", moe=dict(n_experts=4, top_k=5)),
            "top_k (K) = 5 must be between 1 and n_experts",
        ),
        (dict(pattern="M-ME"), "no 'moe' section"),
        (dict(pattern="*-", attention=dict(n_heads=3)), "not divisible by n_heads=3"),
        (dict(pattern="*-", attention=dict(n_heads=4, n_kv_heads=3)), "n_kv_heads=3 must be >= 1 and divide"),
        (dict(pattern="*-", layout=dict(layers=2)), "give exactly one of 'pattern'"),
        (dict(pattern="*-", d_ff=-4), "must be >= 1, got -4"),
    ],
)
def test_invalid_configs_fail_clearly(kw, fragment):
    with pytest.raises(ConfigError) as err:
        model(**kw)
    assert fragment in str(err.value)


def test_mixer_only_stack_when_allowed():
    cfg = model(pattern="MMMM", require_ffn=False)
    assert cfg.n_layers == 4


def test_unknown_and_mistyped_keys_name_file_key_and_suggestion(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(
        "vocab_size: 32\nd_model: 16\nd_ff: 32\npattern: '*-'\nattention:\n  n_heads: 2\n  n_kv_head: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, load_yaml(path), source=path)
    msg = str(err.value)
    assert str(path) in msg and "attention.n_kv_head" in msg and "Did you mean 'n_kv_heads'" in msg

    path.write_text("vocab_size: 32\nd_model: sixteen\nd_ff: 32\npattern: '*-'\n")
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, load_yaml(path), source=path)
    assert "key 'd_model'" in str(err.value) and "expected an integer" in str(err.value)

    path.write_text("vocab_size: 32\nd_model: 16\nd_ff: 32\npattern: 'M-ME'\nmoe: {n_experts: 2, top_k: 3}\n")
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, load_yaml(path), source=path)
    assert str(path) in str(err.value) and "moe.top_k" in str(err.value)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        load_yaml(path)
