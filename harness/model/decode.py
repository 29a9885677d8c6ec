"""Batched decoding over the static inference cache, with the per-token step optionally a CUDA graph.

A decode step at batch 16 of a small model is a few hundred tiny kernels; launched one by one from Python
they, not the GPU, set the pace (transformers' ``generate`` on Jamba: ~200 tokens/s on an H100). Because
:meth:`HybridLM.decode_step` has fixed shapes, updates the preallocated cache in place and never reads a
tensor on the host, it can be recorded once into a ``torch.cuda.CUDAGraph`` and replayed for every token:
one launch per step. ``cuda_graphs=False`` (and any non-CUDA device) runs the very same step eagerly.

    decoder = Decoder(model, batch=16, max_len=2048 + 256, cuda_graphs=True)
    new = decoder.generate(prompt_ids, max_new_tokens=256)

Prompts in a batch have equal lengths: left padding would feed pad tokens into the Mamba state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from harness.model.attention import KVCache
from harness.model.mamba import MambaState
from harness.model.mamba2 import Mamba2State


@dataclass
class InferenceCache:
    """Per-block decoding state for ``batch`` sequences of up to ``max_len`` tokens, allocated once.

    ``seen`` (host) and ``position`` (a (1,) long tensor on the model's device) both count the tokens
    already processed. Multi-token calls read ``seen``; :meth:`HybridLM.decode_step` reads and advances
    only ``position``, so that it can be replayed as a CUDA graph, and its caller counts the token in
    ``seen`` with :meth:`count_step`.
    """

    states: dict[int, KVCache | MambaState | Mamba2State]
    max_len: int
    position: Tensor
    slots: Tensor  # arange(max_len): the attention step's mask is ``slots <= position``
    seen: int = 0

    def reset(self) -> None:
        """Forget every token, in place (tensors keep their addresses, so a captured graph stays valid)."""
        for state in self.states.values():
            for t in (state.k, state.v) if isinstance(state, KVCache) else (state.conv, state.ssm):
                t.zero_()
        self.position.zero_()
        self.seen = 0

    def count_step(self) -> None:
        """Count the token of one :meth:`HybridLM.decode_step` in ``seen`` (the step itself advances
        ``position``); refuses when the cache is full."""
        if self.seen >= self.max_len:
            raise ValueError(f"the inference cache holds {self.max_len} tokens and is full")
        self.seen += 1

    def kv_bytes(self) -> int:
        return sum(s.k.nbytes + s.v.nbytes for s in self.states.values() if isinstance(s, KVCache))

    def mamba_bytes(self) -> int:
        states = [s for s in self.states.values() if isinstance(s, MambaState | Mamba2State)]
        return sum(s.conv.nbytes + s.ssm.nbytes for s in states)


class Decodable(Protocol):
    """What the decoder asks of a model (:class:`~harness.model.lm.HybridLM` is one): a cache, a prefill
    into it, and the fixed-shape step. Named here so that decoding sits below the model that uses it."""

    embed_tokens: nn.Embedding

    def new_cache(self, batch: int, max_len: int) -> InferenceCache: ...

    def prefill(self, input_ids: Tensor, cache: InferenceCache, chunk: int | None = None) -> Tensor: ...

    def decode_step(self, tokens: Tensor, cache: InferenceCache) -> Tensor: ...


def next_token(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """The next token per row from logits (batch, vocab): greedy at temperature 0, else sampled."""
    if temperature > 0:
        probs = (logits.float() / temperature).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    return logits.argmax(-1)


class Decoder:
    """A static cache for ``batch`` rows of up to ``max_len`` tokens and the step that extends it."""

    def __init__(self, model: Decodable, batch: int, max_len: int, cuda_graphs: bool = False):
        self.model = model
        self.device = model.embed_tokens.weight.device
        self.cache: InferenceCache = model.new_cache(batch, max_len)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=self.device)  # the step's input buffer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: Tensor | None = None  # the graph's output buffer
        if cuda_graphs and self.device.type == "cuda":
            self._capture()

    @torch.no_grad()
    def _capture(self) -> None:
        """Record one decode step. Warm-up steps run first on a side stream (as PyTorch's CUDA-graph notes
        ask, so lazy initialisation is not captured); they scribble on the cache, which is then reset."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.model.decode_step(self.tokens, self.cache)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self.model.decode_step(self.tokens, self.cache)
        self.cache.reset()

    def reset(self) -> None:
        """Empty the cache for a new batch of prompts (same batch size and ``max_len``; the graph is kept)."""
        self.cache.reset()

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, chunk: int | None = None) -> Tensor:
        """Run the prompts (batch, tokens) into the cache, ``chunk`` tokens per pass (None: one pass; see
        :meth:`HybridLM.prefill`); returns the last logits (batch, vocab)."""
        return self.model.prefill(input_ids, self.cache, chunk)

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row, tokens (batch,); returns the next logits (batch, vocab).

        With a graph the result is its output buffer, overwritten by the next step: copy it to keep it.
        """
        self.cache.count_step()
        self.tokens.copy_(tokens)
        if self.graph is not None:
            self.graph.replay()
            logits = self.logits
        else:
            logits = self.model.decode_step(self.tokens, self.cache)
        return logits

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop_token: int | None = None,
        generator: torch.Generator | None = None,
        chunk: int | None = None,
    ) -> Tensor:
        """Prefill ``input_ids`` (batch, tokens) into the emptied cache (``chunk`` tokens per pass: see
        :meth:`prefill`) and continue it; greedy when ``temperature`` is 0. Returns the new tokens (batch,
        <= max_new_tokens), stopping early once every row has emitted ``stop_token`` (checking it costs a
        host sync per step)."""
        self.reset()
        logits = self.prefill(input_ids, chunk)
        new = []
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i in range(max_new_tokens):
            token = next_token(logits, temperature, generator)
            new.append(token)
            if stop_token is not None:
                done |= token == stop_token
                if bool(done.all()):
                    break
            if i + 1 < max_new_tokens:
                logits = self.step(token)
        return torch.stack(new, dim=1) if new else input_ids.new_zeros(input_ids.shape[0], 0)
