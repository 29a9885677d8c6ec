"""Static-cache decoding on CPU, for every tiny arm: greedy tokens equal those of the uncached forward pass,
the cache is allocated once and updated in place, and a prefill in chunks (Mamba continuing its conv window
and SSM state, attention its KV cache) leaves what one pass leaves. (The CUDA-graph replay of the same step
and the CUDA scan's chunked prefill are checked in tests/test_gpu.py.)"""

import pytest
import torch

from harness.accounting import kv_cache_bytes, mamba_state_bytes
from harness.config_errors import ConfigError
from harness.model import HybridLM
from harness.model.decode import Decoder, next_token
from harness.model.mamba import MambaState
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


def test_a_mixer_without_decoding_state_is_refused_not_decoded_wrongly():
    """A mixer the cache knows no state for (a new one, docs/extending.md) would see one token at a time
    without its history: the cache refuses it, naming the block, instead of generating garbage."""
    model = HybridLM(get_preset("tiny-1to7")).eval()
    model.blocks[2].layer = torch.nn.Linear(model.cfg.d_model, model.cfg.d_model)  # block 2: a mixer slot
    with pytest.raises(ConfigError, match=r"block 2 \('M', Linear\) keeps no decoding state"):
        model.new_cache(1, 8)
    model(torch.zeros(1, 8, dtype=torch.long))  # scoring text still works


def test_moe_decode_equals_sparse_forward():
    """The sync-free dense mixture of a decoding step computes what the routed, sorted forward computes."""
    model = HybridLM(get_preset("tiny-1to7-moe")).eval()
    moe = next(b.layer for b in model.blocks if b.symbol == "E")
    x = torch.randn(5, 1, model.cfg.d_model)
    with torch.no_grad():
        torch.testing.assert_close(moe.decode(x), moe(x)[0], rtol=1e-6, atol=1e-6)


CHUNKS = (1, 3, 5, 8)  # 1 and 3 are shorter than d_conv (4); none divides the 23-token prompt


def cache_tensors(cache) -> list[torch.Tensor]:
    return [t for s in cache.states.values() for t in vars(s).values()]


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_chunked_prefill_equals_one_shot(name, one_thread):
    """Every chunk size leaves the same last logits and the same KV, conv and SSM caches as one pass, and
    decoding on from them gives the same tokens."""
    model = HybridLM(get_preset(name)).eval()
    prompts = torch.randint(0, VOCAB, (2, 23))
    one_shot = Decoder(model, batch=2, max_len=23 + NEW)
    want_logits = one_shot.prefill(prompts)
    want_cache = [t.clone() for t in cache_tensors(one_shot.cache)]
    want_tokens = one_shot.generate(prompts, NEW)
    for chunk in CHUNKS:
        decoder = Decoder(model, batch=2, max_len=23 + NEW)
        torch.testing.assert_close(decoder.prefill(prompts, chunk), want_logits, rtol=1e-5, atol=1e-5)
        assert decoder.cache.seen == 23 == int(decoder.cache.position)
        for got, want in zip(cache_tensors(decoder.cache), want_cache, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        tokens = [next_token(want_logits, 0.0)]
        for _ in range(NEW - 1):
            tokens.append(next_token(decoder.step(tokens[-1]), 0.0))
        assert torch.equal(torch.stack(tokens, 1), want_tokens), chunk


@torch.no_grad()
def test_mamba_chunk_continuation_equals_token_steps(one_thread):
    """A multi-token forward that continues a Mamba state (conv window + SSM state) computes what feeding
    the same tokens one step at a time computes, outputs and final state alike."""
    model = HybridLM(get_preset("tiny-mamba")).eval()
    mixer = next(b.layer for b in model.blocks if b.symbol == "M")
    mixer.A_log.add_(torch.rand_like(mixer.A_log) - 0.5)  # break the init's channel symmetry
    hidden = torch.randn(2, 19, model.cfg.d_model)
    chunked = mixer.new_state(2, hidden.device, hidden.dtype)
    mixer(hidden[:, :7], state=chunked, fresh=True)
    stepped = MambaState(chunked.conv.clone(), chunked.ssm.clone())
    got = mixer(hidden[:, 7:], state=chunked, fresh=False)
    want = torch.stack([mixer.step(hidden[:, t], stepped) for t in range(7, 19)], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked.conv, stepped.conv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.ssm, stepped.ssm, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_attention_chunk_continuation_equals_explicit_mask():
    """The lower-right causal bias of a chunk continuing the KV cache is the explicit (tokens x keys) mask
    of the probability-capturing path."""
    model = HybridLM(get_preset("tiny-attention-rope")).eval()
    attention = next(b.layer for b in model.blocks if b.symbol == "*")
    x = torch.randn(2, 17, model.cfg.d_model)
    fused = model.new_cache(2, 17).states[0]
    explicit = model.new_cache(2, 17).states[0]
    attention(x[:, :6], cache=fused)
    attention(x[:, :6], cache=explicit)
    got, _ = attention(x[:, 6:], cache=fused, past=6)
    want, probs = attention(x[:, 6:], cache=explicit, past=6, return_probs=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert probs.shape[-2:] == (11, 17) and torch.all(probs[..., 0, 7:] == 0)


def test_prefill_refuses_empty_prompts_and_empty_chunks():
    model = HybridLM(get_preset("tiny-1to7")).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="at least one"):
        model.prefill(torch.zeros(1, 4, dtype=torch.long), model.new_cache(1, 4), chunk=0)
    with torch.no_grad(), pytest.raises(ValueError, match="needs tokens"):
        model.prefill(torch.zeros(1, 0, dtype=torch.long), model.new_cache(1, 4))
