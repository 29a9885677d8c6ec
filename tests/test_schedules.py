"""Learning-rate schedules and loss-spike detection."""

import pytest

from harness.training.config import ScheduleConfig
from harness.training.optim import lr_multiplier
from harness.training.spikes import SpikeDetector


def test_cosine_with_warmup():
    cfg = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, 110, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, 110, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, 110, cfg) == pytest.approx(1.0)
    assert lr_multiplier(60, 110, cfg) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_multiplier(110, 110, cfg) == pytest.approx(0.1)


def test_wsd_is_flat_then_decays_linearly():
    cfg = ScheduleConfig(kind="wsd", warmup_steps=0, min_lr_ratio=0.0, decay_fraction=0.2)
    values = [lr_multiplier(s, 100, cfg) for s in range(100)]
    assert values[:80] == [1.0] * 80
    assert values[80] == pytest.approx(0.95) and values[99] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(values[80:], values[81:], strict=False))


def test_constant():
    cfg = ScheduleConfig(kind="constant", warmup_steps=4)
    assert [lr_multiplier(s, 10, cfg) for s in (0, 3, 4, 9)] == [0.25, 1.0, 1.0, 1.0]


def test_spike_detector():
    det = SpikeDetector(factor=1.5, decay=0.9, warmup_steps=3)
    assert all(det.update(step, 2.0) is None for step in range(1, 10))
    spike = det.update(10, 3.5)
    assert spike == {"step": 10, "loss": 3.5, "ema": pytest.approx(2.0), "ratio": pytest.approx(1.75)}
    assert det.update(11, 2.9) is None  # 2.9 < 1.5 x the EMA, which the spike has raised to 2.15
    early = SpikeDetector(factor=1.5, warmup_steps=5)
    early.update(1, 1.0)
    assert early.update(2, 10.0) is None  # within warm-up
