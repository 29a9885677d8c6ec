"""scripts/gpu/mini_study.py: the budget it picks from calibrated rates. (Its whole pipeline, at --scale
tiny on a CPU, is run by hand before each GPU lease; results/mini/ is one GPU run of it.)"""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "mini_study.py"
spec = importlib.util.spec_from_file_location("mini_study", SCRIPT)
mini_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mini_study)


def test_simulate_shares_the_gpu_as_runs_end():
    # Two runs at 100 tok/s each while both run: the short one ends at 10 s; the long one then runs alone,
    # twice as fast (cap 3), and needs (2000 - 1000) / 200 = 5 s more.
    assert mini_study.simulate([(1000, 100), (2000, 100)], cap=3) == pytest.approx(15)
    assert mini_study.simulate([(1000, 100), (2000, 100)], cap=1) == pytest.approx(20)
    assert mini_study.simulate([(1000, 100)], cap=3) == pytest.approx(10)


def test_budget_is_the_largest_that_fits():
    text = {f"r{i}": {"tokens_per_s": 20_000} for i in range(4)}
    tokens = mini_study.choose_budget(text, [], seconds=1000, cap=1)
    assert tokens == 20_000_000  # 4 runs at 20K tok/s for 1000 s
    assert mini_study.choose_budget(text, [], seconds=10**6, cap=1) == mini_study.MAX_TOKENS
    slow = {**text, "moe": {"tokens_per_s": 5_000}}  # the slowest run sets the pace, sped up as others end
    assert mini_study.choose_budget(slow, [], seconds=1000, cap=3) < tokens


def test_split_grid_launches_values_in_order_across_sweeps():
    a = {"name": "a", "grid": {"model.d_model": [64, 128, 256], "optim.lr": [1, 2]}}
    b = {"name": "b", "grid": {"model.d_model": [64, 128]}}
    c = {"name": "c", "grid": {"optim.lr": [1]}}  # no such axis: launched whole, once, first
    parts = mini_study.split_grid([("a.yaml", a), ("b.yaml", b), ("c.yaml", c)], "model.d_model=128,64")
    assert [(rel, p["grid"].get("model.d_model"), s) for rel, p, s in parts] == [
        ("a.yaml", [128], "-d_model128"),
        ("b.yaml", [128], "-d_model128"),
        ("c.yaml", None, ""),
        ("a.yaml", [64], "-d_model64"),
        ("b.yaml", [64], "-d_model64"),
    ]
    assert all(p["name"] == {"a.yaml": "a", "b.yaml": "b", "c.yaml": "c"}[rel] for rel, p, _ in parts)
    assert a["grid"]["model.d_model"] == [64, 128, 256]  # the sweep itself is left alone
    with pytest.raises(SystemExit, match="512 is not among"):
        mini_study.split_grid([("b.yaml", b)], "model.d_model=512")
