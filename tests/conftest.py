"""Shared test settings: deterministic, offline, few threads (CI machines have 2 cores)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Without a GPU, Triton kernels can run only in Triton's interpreter (tests/test_scan_triton.py), and
# triton.jit reads this when triton is imported and when it decorates: set before anything imports triton
# (torch._dynamo does, in any test that compiles).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """torch on one thread for the test: on two cores shared with other processes, more threads spin-wait in
    OpenMP and run tiny models ~30x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The real single-node SLURM (scripts/slurm/start.sh), shared by every test module of the session."""
    from slurm_fixture import slurm_session

    yield from slurm_session()


# Tiny trained checkpoints for the evaluation tests: defined once here so that every test module shares one
# training per session (a fixture imported into several modules would be built once per module).
from eval_fixture import eval_packs, hybrid_run, mamba_run  # noqa: E402, F401
