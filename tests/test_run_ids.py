"""Run ids are the experiment's identity: a refactor of how configs are read must not change them. The table
holds ids computed by the code of 2026-12-07 before the model section was resolved once (commit 0855308);
the committed results' runs are checked by tests/test_results_mini.py and tests/test_results_recall.py."""

from pathlib import Path

import pytest

from sweeps.config import expand_sweep, load_sweep

REPO = Path(__file__).resolve().parents[1]
KNOWN = {
    "sweeps/table4-tiny.yaml": {
        "attention": "ce0f9aedd133", "mamba": "1de884f21819", "1:3": "986f75d45106", "1:7": "b32671c681f8"
    },
    "sweeps/table4.yaml": {
        "attention": "87a7ce0c1e3d", "mamba": "ddb34317b8be", "1:3": "ad0dc30b271c", "1:7": "bd75ec7ac8e9"
    },
    "sweeps/table7-mini.yaml": {"1:7": "f6ba36ae21d9", "1:7+moe": "91865e90d2e1"},
    "sweeps/fig8-tiny.yaml": {"1:7": "5931fed58f85", "1:7-nonorm": "b46c97285e6c"},
    "sweeps/table8-mini.yaml": {"no-pos": "e595b56a0a8f", "rope": "ab99a4ec6b47"},
    "sweeps/mini-mqar.yaml": {
        "attention": "19e72101256f", "attention+rope": "ba60af187d31", "mamba": "a2d3aa8de9bc",
        "1:3": "8d1d2d17d537", "1:7": "81d5c16be705",
    },
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(KNOWN))
def test_run_ids_are_what_they_were(path):
    runs = expand_sweep(load_sweep(REPO / path))
    assert {r.arm: r.run_id for r in runs} == KNOWN[path]
