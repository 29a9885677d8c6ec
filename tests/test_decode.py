"""Static-cache decoding on CPU, for every tiny arm: greedy tokens equal those of the uncached forward pass,
and the cache is allocated once and updated in place. (The CUDA-graph replay of the same step is checked in
tests/test_gpu.py.)"""

import pytest
import torch

from harness.accounting import kv_cache_bytes, mamba_state_bytes
from harness.model import HybridLM
from harness.model.decode import Decoder
from harness.presets import family_preset_names, get_preset

TINY = [n for n in family_preset_names() if n.startswith("tiny-")]
VOCAB = 4096
PROMPT, NEW = 10, 8


def uncached_greedy(model: HybridLM, prompt: torch.Tensor, new: int) -> torch.Tensor:
    """Greedy continuation by re-running the whole growing sequence through the model, no cache."""
    ids = prompt
    for _ in range(new):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, prompt.shape[1] :]


def addresses(decoder: Decoder) -> list[int]:
    return [t.data_ptr() for s in decoder.cache.states.values() for t in vars(s).values()]


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_static_cache_greedy_equals_uncached_forward(name, one_thread):
    model = HybridLM(get_preset(name)).eval()
    prompts = torch.randint(0, VOCAB, (3, PROMPT))
    want = uncached_greedy(model, prompts, NEW)
    decoder = Decoder(model, batch=3, max_len=PROMPT + NEW, cuda_graphs=True)  # no CUDA: the same step, eager
    assert decoder.graph is None
    before = addresses(decoder)
    assert torch.equal(decoder.generate(prompts, NEW), want)
    assert addresses(decoder) == before  # allocated once, updated in place
    assert decoder.cache.seen == PROMPT + NEW - 1 == int(decoder.cache.position)
    assert torch.equal(model.generate(prompts[1:2], NEW), want[1:2])  # batch 1


def test_cache_is_sized_as_the_accounting_predicts_and_refuses_overflow():
    model = HybridLM(get_preset("tiny-1to7")).eval()
    cache = model.new_cache(2, 40)
    assert cache.kv_bytes() == kv_cache_bytes(model.cfg, 40, batch=2, bytes_per_element=4)
    assert cache.mamba_bytes() == mamba_state_bytes(model.cfg, batch=2, bytes_per_element=4)
    with torch.no_grad():
        with pytest.raises(ValueError, match="holds 40 tokens"):
            model(torch.zeros(2, 41, dtype=torch.long), cache=cache)
        cache.reset()
        decoder = Decoder(model, batch=2, max_len=5)
        decoder.prefill(torch.zeros(2, 5, dtype=torch.long))
        with pytest.raises(ValueError, match="full"):
            decoder.step(torch.zeros(2, dtype=torch.long))


def test_moe_decode_equals_sparse_forward():
    """The sync-free dense mixture of a decoding step computes what the routed, sorted forward computes."""
    model = HybridLM(get_preset("tiny-1to7-moe")).eval()
    moe = next(b.layer for b in model.blocks if b.symbol == "E")
    x = torch.randn(5, 1, model.cfg.d_model)
    with torch.no_grad():
        torch.testing.assert_close(moe.decode(x), moe(x)[0], rtol=1e-6, atol=1e-6)
