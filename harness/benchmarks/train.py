"""Training throughput: our model against the implementations users already have, same config, same run.

The ratios a speed claim rests on (issue 15) are only meaningful when measured side by side on one machine,
so the anchors live here rather than in one-off scripts:

* ``transformers``: transformers' ``JambaForCausalLM`` holding *our* weights (exported with
  :func:`harness.hf_interop.to_hf_model`), so both start from the same point; layouts it cannot run (pure
  Mamba, RoPE, no inner Mamba norm: see hf_interop) are skipped with hf_interop's reason.
* ``mamba_ssm``: ``MambaLMHeadModel`` with the preset's width, depth, vocabulary and pattern: Mamba-1
  mixers, its ``MHA`` (causal, the preset's query / KV heads, bias-free like ours) at the same layer
  indices, a ``GatedMLP`` of the preset's ``d_ff`` after every mixer (mamba_ssm rounds it up to a multiple
  of 128), RMSNorm, fused add+norm, fp32 residual, untied embeddings. It has no inner Mamba norms (Jamba's)
  and no MoE, so MoE presets and pure attention (that is Llama's) are skipped. It needs CUDA.
* ``llama``: transformers' ``LlamaForCausalLM`` with SDPA and the preset's width, depth, heads and
  vocabulary, its MLP width solved so that its parameters match our *active* parameters: for a dense
  attention preset that is our ``d_ff``, so it is the same model with RoPE; for a hybrid it is the
  attention reference of the same size (its FLOPs, and so its MFU, are counted for its own layout).
* ``mamba_ssm+liger`` and ``llama+liger``: the same two with liger-kernel, the strongest stacks a user
  would assemble from released packages: mamba_ssm's backbone with liger's fused linear + cross-entropy on
  its head; Llama under ``apply_liger_kernel_to_llama`` (RoPE, RMSNorm, SwiGLU, fused linear +
  cross-entropy), whose patches of transformers' Llama module are undone after its turn.

Each mamba_ssm row records whether it took its fused path (which needs causal-conv1d), and the record the
versions of mamba_ssm, causal-conv1d and liger-kernel, so every row says which kernels it ran.

Every model gets the same batches, bf16 weights on CUDA (fp32 on CPU), fused AdamW, and the same loss, mean
next-token cross-entropy: the anchors' from their logits, computed identically outside the model; ours
from its own ``targets`` path, as training computes it (with fused kernels, liger's fused linear +
cross-entropy, which never forms the logits: :mod:`harness.kernels.fused`). bf16 weights rather than autocast
because transformers' Jamba CUDA path fails under autocast (its fp32 inner norms hand the scan kernel B and
C in another dtype than u) and bf16 weights are how it is normally trained. Each model is built just before
its turn and freed after it, so its peak memory is its own; it is warmed up, then timed over ``steps``
optimizer steps with the GPU synchronised. The table reports tokens/s, MFU (FLOPs per token from
:mod:`harness.accounting`), peak memory and ours / anchor; an anchor whose package is missing, which
cannot run the layout, or which fails during its run is skipped with the reason, printed and recorded.

    ablate bench train --preset 1.3b-1to7 --batch 8 --seq-len 2048 --against transformers,mamba_ssm

``--moe-backend loop,grouped`` times our model once per MoE backend (:class:`harness.model.ffn.MoE`), one
row each, and ``--kernels fused,eager`` once per kernel setting (``ModelConfig.kernels``), so a kernel
change is measured before and after in one run; anchors' ``ours/it`` is against the first of our rows.
``--profile N`` adds the top N kernels of each of our rows (:mod:`harness.benchmarks.profile`) to the table
and to that row of the record.

The record (device, versions, commit: :mod:`harness.benchmarks.record`) is written as JSON, by default to
``results/bench/train-<preset>-b<batch>x<seq-len>-<device>.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.accounting import format_params, param_breakdown, plan_model
from harness.benchmarks.profile import print_kernels, top_kernels
from harness.benchmarks.record import bench_record, device_name, write_bench_json
from harness.config_errors import ConfigError
from harness.devices import synchronize
from harness.kernels.fused import KERNELS, fused_available, kernels_run, linear_cross_entropy
from harness.kernels.selective_scan import BACKENDS as SCAN_BACKENDS
from harness.kernels.selective_scan import resolve_backend
from harness.model import HybridLM
from harness.model.config import AttentionConfig, ModelConfig
from harness.model.ffn import takes_grouped
from harness.presets import get_preset
from harness.training.float8 import convert_to_float8, float8_problem
from harness.training.trainer import peak_flops

ANCHORS = ("transformers", "mamba_ssm", "llama", "mamba_ssm+liger", "llama+liger")
MOE_BACKENDS = ("auto", "loop", "grouped")
COMPILE_MODES = ("off", "on")
FLOAT8_MODES = ("off", "on")
BENCH_DIR = Path("results/bench")


class AnchorSkipped(Exception):
    """An anchor that cannot be timed here; the message is the reason printed and recorded."""


@dataclass
class Contender:
    """One model in the race: how to build it (on the device, just before its turn) and its training loss
    on a batch of (batch, tokens + 1) ids."""

    name: str
    label: str
    build: Callable[[], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    flops_per_token: float
    settings: dict = field(default_factory=dict)
    # Process-wide changes the contender needs while it is built and timed (liger's patches of
    # transformers' Llama module), undone after its turn so that the next contender runs unpatched.
    patches: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def default_json_path(preset: str, batch: int, seq_len: int) -> Path:
    """Where a run's record goes unless told otherwise: one file per preset, shape and device."""
    device = re.sub(r"[^a-z0-9]+", "-", device_name().lower()).strip("-")
    return BENCH_DIR / f"train-{preset}-b{batch}x{seq_len}-{device}.json"


def _seeded(seed: int, device: torch.device, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on ``device`` from a fresh seed: the same seed gives the same weights, so ours and its
    transformers export start equal without keeping a copy alive."""
    torch.manual_seed(seed)
    with device:
        return make()


def _time_steps(
    step: Callable[[torch.Tensor], float], batches: list[torch.Tensor], warmup: int, device: torch.device
) -> tuple[float, float, float | None]:
    """Seconds per step (mean over the timed steps), last loss, peak GiB (``None`` off CUDA)."""
    for ids in batches[:warmup]:
        step(ids)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    loss = float("nan")
    for ids in batches[warmup:]:
        loss = step(ids)
    synchronize(device)
    elapsed = (time.perf_counter() - start) / max(1, len(batches) - warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return elapsed, loss, peak


def _logits_loss(logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> Callable:
    """An anchor's loss: next-token cross-entropy of ``logits(model, inputs)``, in fp32."""

    def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits(model, ids[:, :-1]).float().flatten(0, 1), ids[:, 1:].flatten())

    return loss


def _make_step(model: nn.Module, loss_of: Callable, device: torch.device) -> Callable[[torch.Tensor], float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step(ids: torch.Tensor) -> float:
        loss = loss_of(model, ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _ours(
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    seq_len: int,
    moe_backend: str,
    compiled: bool = False,
    kernels: str = "auto",
    float8: bool = False,
    scan_backend: str = "auto",
) -> Contender:
    """Our model; with MoE layers, running them on ``moe_backend`` (the label says which, and what
    ``auto`` resolves to here); ``compiled``: under ``torch.compile``, as ``train.compile`` runs it;
    ``kernels``: ``ModelConfig.kernels`` (the label says what it resolves to here); ``float8``: with
    ``train.float8``'s float8 linears (:mod:`harness.training.float8`); ``scan_backend``: Mamba-1's
    selective scan (``mamba.scan_backend``; the label names it unless it is ``auto``)."""
    notes, settings = ["HybridLM"], {}
    cfg = dataclasses.replace(cfg, kernels=kernels)
    runs = kernels_run(kernels, device, compiled)
    settings.update(kernels=kernels, kernels_run=runs)
    notes.append(runs)
    if "M" in cfg.pattern and scan_backend != "auto":  # auto: what every other row of the record runs
        cfg = dataclasses.replace(cfg, mamba=dataclasses.replace(cfg.mamba, scan_backend=scan_backend))
        settings["scan_backend"] = scan_backend
        notes.append(f"{scan_backend} scan")
    if cfg.moe is not None:
        cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, backend=moe_backend))
        probe = torch.empty(0, cfg.d_model, device=device, dtype=dtype)
        runs = "grouped" if takes_grouped(moe_backend, probe, cfg.expert_d_ff, dtype) else "loop"
        settings.update(moe_backend=moe_backend, moe_runs=runs)
        notes.append(f"MoE {runs}")
    if float8:
        settings["float8"] = True
        notes.append("float8")
    if compiled:
        settings["compile"] = True
        notes.append("compiled")
    label = f"ours ({', '.join(notes)})"

    def build() -> nn.Module:
        model = _seeded(seed, device, lambda: HybridLM(cfg)).to(dtype)
        if float8:  # as the trainer does: before compile and the optimizer
            settings["float8_linears"] = len(convert_to_float8(model, device))
        return torch.compile(model) if compiled else model

    return Contender(
        "ours",
        label,
        build,
        lambda model, ids: model(ids[:, :-1], targets=ids[:, 1:]).loss,
        plan_model(cfg, context=seq_len).flops_per_token,
        settings,
    )


def _transformers_jamba(
    cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int, seq_len: int
) -> Contender:
    try:
        from harness.hf_interop import to_hf_config, to_hf_model

        # On CUDA, let transformers take its mamba-ssm / causal-conv1d kernel path, as ours does.
        kernels = device.type == "cuda"
        to_hf_config(cfg, use_mamba_kernels=kernels)  # refuses the layouts transformers cannot run
    except (ConfigError, ImportError) as e:
        raise AnchorSkipped(str(e)) from e

    def build() -> nn.Module:
        hf = to_hf_model(_seeded(seed, device, lambda: HybridLM(cfg)), use_mamba_kernels=kernels).to(dtype)
        hf.config.use_cache = False
        return hf

    return Contender(
        "transformers",
        "transformers JambaForCausalLM",
        build,
        _logits_loss(lambda model, ids: model(ids, use_cache=False).logits),
        plan_model(cfg, context=seq_len).flops_per_token,
        {"weights": "ours, exported", "use_mamba_kernels": kernels},
    )


def _mamba_ssm(
    cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int, seq_len: int
) -> Contender:
    if "E" in cfg.pattern:
        raise AnchorSkipped("mamba_ssm has no MoE layer")
    if "M" in cfg.pattern and "S" in cfg.pattern:
        raise AnchorSkipped("mamba_ssm's model has one kind of Mamba layer; this pattern mixes Mamba-1 and 2")
    if "M" not in cfg.pattern and "S" not in cfg.pattern:
        raise AnchorSkipped("no Mamba layer in the pattern (the pure-attention anchor is llama)")
    if not re.fullmatch(r"([MS*]-)+", cfg.pattern):
        raise AnchorSkipped("mamba_ssm's blocks pair every mixer with exactly one MLP")
    try:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except (ImportError, OSError) as e:  # not installed, or installed without its compiled kernels
        raise AnchorSkipped(f"the mamba_ssm package cannot be imported: {e}") from e
    if device.type != "cuda":
        raise AnchorSkipped("mamba_ssm's selective scan and fused norms need CUDA")
    if cfg.attention.rope:
        try:
            import flash_attn.layers.rotary  # noqa: F401
        except ImportError as e:
            raise AnchorSkipped(f"mamba_ssm's rotary attention needs the flash_attn package: {e}") from e
    m, mixers = cfg.mamba, cfg.pattern[::2]
    conv_installed = importlib.util.find_spec("causal_conv1d") is not None
    ssm_cfg = dict(
        layer="Mamba1",
        d_state=m.d_state,
        d_conv=m.d_conv,
        expand=m.expand,
        dt_rank=cfg.dt_rank,
        dt_min=m.dt_min,
        dt_max=m.dt_max,
        dt_init_floor=m.dt_init_floor,
        conv_bias=m.conv_bias,
        bias=m.proj_bias,
    )
    if "S" in cfg.pattern:  # its Mamba2 module, with our Mamba-2 settings (mamba_ssm's own fused path)
        m2 = cfg.mamba2
        ssm_cfg = dict(
            layer="Mamba2",
            d_state=m2.d_state,
            d_conv=m2.d_conv,
            expand=m2.expand,
            headdim=m2.head_dim,
            ngroups=m2.n_groups,
            chunk_size=m2.chunk_size,
            dt_min=m2.dt_min,
            dt_max=m2.dt_max,
            dt_init_floor=m2.dt_init_floor,
            A_init_range=m2.A_init_range,
            conv_bias=m2.conv_bias,
            bias=m2.proj_bias,
        )
        # Its fused path (one kernel for conv, scan, norm and projection) calls causal-conv1d's kernel
        # unconditionally; without that package it fails with a TypeError, so take the unfused path there
        # (torch's conv1d, then the same chunked SSD scan), as Mamba2 itself does for inference.
        if not conv_installed:
            ssm_cfg["use_mem_eff_path"] = False
    attn_cfg = dict(
        num_heads=cfg.attention.n_heads,
        num_heads_kv=cfg.attention.kv_heads,
        head_dim=cfg.head_dim,
        causal=True,
        qkv_proj_bias=False,
        out_proj_bias=False,
        rotary_emb_dim=cfg.head_dim if cfg.attention.rope else 0,
        rotary_emb_base=cfg.attention.rope_theta,
    )
    config = MambaConfig(
        d_model=cfg.d_model,
        d_intermediate=cfg.d_ff,
        n_layer=len(mixers),
        vocab_size=cfg.vocab_size,
        ssm_cfg=ssm_cfg,
        attn_layer_idx=[i for i, c in enumerate(mixers) if c == "*"],
        attn_cfg=attn_cfg,
        rms_norm=True,
        residual_in_fp32=True,
        fused_add_norm=True,
        tie_embeddings=cfg.tie_embeddings,
    )
    return Contender(
        "mamba_ssm",
        "mamba_ssm MambaLMHeadModel",
        lambda: _seeded(seed, device, lambda: MambaLMHeadModel(config, device=device, dtype=dtype)),
        _logits_loss(lambda model, ids: model(ids).logits),
        plan_model(cfg, context=seq_len).flops_per_token,
        {
            "mixer": ssm_cfg["layer"],
            "attn_layer_idx": config.attn_layer_idx,
            "d_intermediate": cfg.d_ff,
            # Mamba1's mamba_inner_fn and Mamba2's split-conv kernel both need causal-conv1d; without it
            # each takes its unfused path (torch's conv1d, then the same scan)
            "fused_path": conv_installed,
        },
    )


def llama_equivalent(cfg: ModelConfig) -> ModelConfig:
    """Our pure-attention config with ``cfg``'s width, depth, heads and vocabulary whose MLP width (a
    multiple of 8) brings it to ``cfg``'s active parameters: what the Llama anchor is, in our accounting."""
    target = plan_model(cfg).params_active

    def with_d_ff(d_ff: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=cfg.vocab_size,
            d_model=cfg.d_model,
            d_ff=d_ff,
            pattern=f"(*-)x{cfg.n_layers}",
            attention=AttentionConfig(
                n_heads=cfg.attention.n_heads,
                n_kv_heads=cfg.attention.kv_heads,
                head_dim=cfg.head_dim,
                rope=True,
            ),
            norm_eps=cfg.norm_eps,
            tie_embeddings=cfg.tie_embeddings,
        )

    base = sum(param_breakdown(with_d_ff(8)).values())
    per_unit = (sum(param_breakdown(with_d_ff(16)).values()) - base) / 8
    return with_d_ff(max(8, round((8 + (target - base) / per_unit) / 8) * 8))


def _llama(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int, seq_len: int) -> Contender:
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        raise AnchorSkipped(f"the transformers package cannot be imported: {e}") from e
    eq = llama_equivalent(cfg)
    config = LlamaConfig(
        vocab_size=eq.vocab_size,
        hidden_size=eq.d_model,
        intermediate_size=eq.d_ff,
        num_hidden_layers=eq.n_layers,
        num_attention_heads=eq.attention.n_heads,
        num_key_value_heads=eq.attention.kv_heads,
        head_dim=eq.head_dim,
        rms_norm_eps=eq.norm_eps,
        max_position_embeddings=seq_len,
        tie_word_embeddings=eq.tie_embeddings,
        use_cache=False,
    )
    config._attn_implementation = "sdpa"
    return Contender(
        "llama",
        "transformers LlamaForCausalLM",
        lambda: _seeded(seed, device, lambda: LlamaForCausalLM(config)).to(dtype),
        _logits_loss(lambda model, ids: model(ids, use_cache=False).logits),
        plan_model(eq, context=seq_len).flops_per_token,
        {"attention": "sdpa", "intermediate_size": eq.d_ff},
    )


def _liger_usable(device: torch.device) -> None:
    """AnchorSkipped unless liger-kernel's Triton kernels can run here."""
    why = "its kernels need CUDA" if device.type != "cuda" else fused_available()
    if why is not None:
        raise AnchorSkipped(f"liger-kernel cannot run: {why}")


def _mamba_ssm_liger(
    cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int, seq_len: int
) -> Contender:
    """The mamba_ssm anchor with liger's fused linear + cross-entropy on its head (the logits are never
    formed), the strongest Mamba stack a user would assemble from released packages."""
    _liger_usable(device)
    base = _mamba_ssm(cfg, device, dtype, seed, seq_len)

    def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(model.backbone(ids[:, :-1]), model.lm_head.weight, ids[:, 1:])

    return dataclasses.replace(
        base,
        name="mamba_ssm+liger",
        label=f"{base.label} + liger LCE",
        loss=loss,
        settings={**base.settings, "head": "liger fused linear + cross-entropy"},
    )


@contextlib.contextmanager
def _llama_module_restored():
    """Let liger patch transformers' Llama module (its RoPE function, RMSNorm and MLP classes) for one
    contender, then put back what was there."""
    from transformers.models.llama import modeling_llama

    names = ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP")
    saved = {name: getattr(modeling_llama, name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(modeling_llama, name, value)


def _llama_liger(
    cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int, seq_len: int
) -> Contender:
    """The Llama anchor under ``apply_liger_kernel_to_llama``: liger's RoPE, RMSNorm, SwiGLU and fused
    linear + cross-entropy (the loss from the model's own forward, given the shifted labels)."""
    _liger_usable(device)
    base = _llama(cfg, device, dtype, seed, seq_len)

    def build() -> nn.Module:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        model = base.build()
        apply_liger_kernel_to_llama(
            rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True, model=model
        )
        return model

    return dataclasses.replace(
        base,
        name="llama+liger",
        label=f"{base.label} + liger",
        build=build,
        loss=lambda model, ids: model(input_ids=ids[:, :-1], shift_labels=ids[:, 1:], use_cache=False).loss,
        settings={**base.settings, "liger": "rope, rms_norm, swiglu, fused linear + cross-entropy"},
        patches=_llama_module_restored,
    )


ANCHOR_BUILDERS = {
    "transformers": _transformers_jamba,
    "mamba_ssm": _mamba_ssm,
    "llama": _llama,
    "mamba_ssm+liger": _mamba_ssm_liger,
    "llama+liger": _llama_liger,
}


def _race(
    contender: Contender,
    batches: list[torch.Tensor],
    warmup: int,
    device: torch.device,
    peak: float | None,
    profile: int = 0,
) -> dict:
    """Build, time and free one contender; its numbers as a JSON-ready dict. ``profile`` > 0 then runs
    the timed batches again under the profiler and adds their top ``profile`` kernels."""
    kernels = None
    with contender.patches():
        model = contender.build()
        try:
            params = sum(p.numel() for p in model.parameters())
            step = _make_step(model, contender.loss, device)
            seconds, loss, mem = _time_steps(step, batches, warmup, device)
            if profile > 0:
                kernels = top_kernels(step, batches[warmup:], device, profile)
        finally:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    tokens = batches[0].shape[0] * (batches[0].shape[1] - 1)
    return {
        "params": params,
        "tokens_per_s": tokens / seconds,
        "step_ms": seconds * 1e3,
        "flops_per_token": contender.flops_per_token,
        "mfu": contender.flops_per_token * tokens / seconds / peak if peak else None,
        "peak_gib": mem,
        "loss": loss,
        **({"profile": kernels} if kernels is not None else {}),
    }


def _print_table(title: str, results: list[dict]) -> None:
    print(title)
    print(
        f"{'model':<30} {'params':>8} {'tokens/s':>11} {'step ms':>9} {'MFU':>6} {'peak GiB':>9} "
        f"{'loss':>7} {'ours/it':>8}"
    )
    for r in results:
        if "skipped" in r:
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        ratio = f"{r['ours_over']:.2f}x" if r.get("ours_over") is not None else "-"
        print(
            f"{r['label']:<30} {format_params(r['params']):>8} {r['tokens_per_s']:>11,.0f} "
            f"{r['step_ms']:>9.1f} {mfu:>6} {mem:>9} {r['loss']:>7.3f} {ratio:>8}"
        )
    for r in results:
        if "skipped" in r:
            print(f"{r['model']} not timed: {r['skipped']}")
    for r in results:
        if "profile" in r:
            print_kernels(r["label"], r["profile"])


def _check_choices(given: Sequence[str], choices: Sequence[str], what: str, key: str) -> None:
    """ConfigError under ``key`` unless ``given`` is a non-empty list of ``choices``."""
    bad = [g for g in given if g not in choices] or ([] if given else ["(none)"])
    if bad:
        raise ConfigError(f"unknown {what}(s) {bad}; choose from {', '.join(choices)}", key=key)


def run_train_benchmark(
    preset: str,
    batch: int = 16,
    seq_len: int = 1024,
    steps: int = 10,
    warmup: int = 3,
    seed: int = 0,
    against: Sequence[str] = (),
    json_path: str | Path | None = None,
    moe_backends: Sequence[str] = ("auto",),
    profile: int = 0,
    compile_modes: Sequence[str] = ("off",),
    kernel_modes: Sequence[str] = ("auto",),
    float8_modes: Sequence[str] = ("off",),
    scan_backends: Sequence[str] = ("auto",),
) -> dict:
    """Time ours (once per MoE backend in ``moe_backends`` when the preset has MoE layers, per entry of
    ``kernel_modes`` (``ModelConfig.kernels``), of ``compile_modes`` and of ``float8_modes``, off or on) and
    each anchor in ``against`` (names from :data:`ANCHORS`) on the same batches; ``profile`` > 0 records the
    top ``profile`` kernels of each of our rows; one row per entry of ``scan_backends`` (Mamba-1's selective
    scan: ``auto``, ``cuda`` for mamba_ssm's kernel, ``triton`` for ours). Prints the table, writes the
    record to ``json_path`` (default: :func:`default_json_path`) and returns it."""
    unknown = [a for a in against if a not in ANCHOR_BUILDERS]
    if unknown:
        raise ConfigError(f"unknown anchor(s) {unknown}; choose from {', '.join(ANCHORS)}", key="against")
    _check_choices(moe_backends, MOE_BACKENDS, "MoE backend", "moe_backend")
    _check_choices(compile_modes, COMPILE_MODES, "compile mode", "compile")
    _check_choices(kernel_modes, KERNELS, "kernels setting", "kernels")
    _check_choices(float8_modes, FLOAT8_MODES, "float8 mode", "float8")
    _check_choices(scan_backends, SCAN_BACKENDS, "scan backend", "scan_backend")
    if profile < 0:
        raise ConfigError(f"must be >= 0, got {profile}", key="profile")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for kernels in kernel_modes:
        try:
            kernels_run(kernels, device)
        except RuntimeError as e:  # fused asked for where it cannot run: say why, before any model is built
            raise ConfigError(str(e), key="kernels") from None
    for scan_backend in scan_backends:
        try:
            resolve_backend(scan_backend, device)
        except RuntimeError as e:  # e.g. triton or cuda on a CPU: say why, before any model is built
            raise ConfigError(str(e), key="scan_backend") from None
    why = float8_problem(device) if "on" in float8_modes else None
    if why is not None:
        raise ConfigError(f"float8 cannot run here: {why}", key="float8")
    cfg = get_preset(preset)
    g = torch.Generator().manual_seed(seed)
    batches = [
        torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), generator=g).to(device)
        for _ in range(warmup + steps)
    ]
    peak = peak_flops(device)

    results = []
    backends = moe_backends if cfg.moe is not None else moe_backends[:1]
    axes = itertools.product(backends, kernel_modes, compile_modes, float8_modes, scan_backends)
    for backend, kernels, mode, f8, scan in axes:
        ours = _ours(cfg, device, dtype, seed, seq_len, backend, mode == "on", kernels, f8 == "on", scan)
        race = _race(ours, batches, warmup, device, peak, profile)  # fills in settings' float8 count
        results.append({"model": ours.name, "label": ours.label, "settings": ours.settings, **race})
    for name in against:
        entry: dict = {"model": name}
        try:
            contender = ANCHOR_BUILDERS[name](cfg, device, dtype, seed, seq_len)
            entry.update(label=contender.label, settings=contender.settings)
            entry.update(_race(contender, batches, warmup, device, peak))
            entry["ours_over"] = results[0]["tokens_per_s"] / entry["tokens_per_s"]
        except AnchorSkipped as e:
            entry["skipped"] = str(e)
        except Exception as e:  # noqa: BLE001 - another library's failure (OOM, a missing kernel, ...) is a row
            entry = {"model": name, "skipped": f"failed during its run: {type(e).__name__}: {e}"}
        results.append(entry)

    shape = f"batch {batch} x seq {seq_len}, {steps} steps after {warmup} warm-up, {str(dtype)[6:]} weights"
    _print_table(f"{preset}: {cfg.pattern} | {shape} | {device_name()}", results)
    config = {
        "preset": preset,
        "pattern": cfg.pattern,
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        "warmup": warmup,
        "seed": seed,
        "dtype": str(dtype),
        "against": list(against),
        "moe_backends": list(moe_backends) if cfg.moe is not None else None,
        "compile": list(compile_modes),
        "float8": list(float8_modes),
        "kernels": list(kernel_modes),
        "scan_backends": list(scan_backends),
        "profile": profile,
    }
    record = bench_record("train", config, results)
    path = write_bench_json(record, json_path or default_json_path(preset, batch, seq_len))
    print(f"record: {path}")
    return record
