"""Shared helpers for the test suite."""

from __future__ import annotations

import os

# Triton's interpreter (the CUDA paths' tests, tests/triton_support.py) must be on before
# anything imports triton, and torch may import it while other test modules are collected.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

try:  # keep property tests fast and deterministic everywhere
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "adagrad",
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("adagrad")
except ImportError:  # pragma: no cover
    pass


def to64(t: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 numpy array (complex tensors through view_as_real)."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    # one copy, of its own (C order, as .numpy().copy() gave)
    return t.to(torch.float64, copy=True,
                memory_format=torch.contiguous_format).cpu().numpy()


def from64(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A float64 array back as a tensor of ``like``'s dtype (complex via view_as_complex)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if like.is_complex():
        return torch.view_as_complex(t.to(torch.float64)).to(like.dtype)
    return t.to(like.dtype)


def pytest_configure(config: pytest.Config) -> None:
    """The slow pass (``-m slow``) shares its tests out one by one and lets an idle worker
    take queued tests from the other (``--dist worksteal``): they are few and long, and one
    module holds most of them, which the default pass's ``--dist loadfile``
    (pyproject.toml) would put on a single worker. (With ``--dist load`` the pass took
    638 s on a fresh 2-core clone, with ``worksteal`` 511 s, for the same CPU time.)"""
    if config.option.markexpr == "slow" and getattr(config.option, "dist", None) == "loadfile":
        config.option.dist = "worksteal"


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield
