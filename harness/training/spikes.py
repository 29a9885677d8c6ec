"""Loss-spike detection: a loss above ``factor`` x its exponential moving average is a spike.

The paper's Fig. 8 shows large loss spikes in Mamba without inner RMSNorm at scale; recording them as
events (step, loss, EMA, ratio) makes such runs comparable without eyeballing curves. The EMA is part of
the checkpoint, so a resumed run flags exactly the spikes an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpikeDetector:
    factor: float = 1.5
    decay: float = 0.98
    warmup_steps: int = 20
    ema: float | None = None

    def update(self, step: int, loss: float) -> dict | None:
        """Fold in the loss of ``step``; returns the spike's details when it is one."""
        spike = None
        if self.ema is not None and step > self.warmup_steps and loss > self.factor * self.ema:
            spike = {"step": step, "loss": loss, "ema": self.ema, "ratio": loss / self.ema}
        self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss
        return spike
