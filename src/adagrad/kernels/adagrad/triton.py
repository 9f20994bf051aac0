"""Dense Adagrad on CUDA in one Triton launch for many tensors (issue 13).

Implements `StepRule` (:ref:`algo-adagrad`, every option) for contiguous float32, bfloat16 and
float16 parameters with a float32 accumulator: each element of θ, g and G is read once and
θ and G are written once, whatever the number of tensors. The tensors of one launch share
dtypes and rule; a small int64 table on the device (their pointers, sizes and first block
numbers) lets one flat grid of blocks cover all of them, each block finding its tensor by
counting the first-block numbers at or below its own. The table depends only on the
tensors' addresses and sizes, so it is cached and, in a steady training loop, never copied
again.

No host synchronisation: the table goes to the device with a non-blocking copy, and a
learning rate given as a device tensor is read by the kernel (``lr_t = lr·rule.lr``, the
host giving ``rule.lr = 1/(1 + (t-1)·lr_decay)`` from the host-side step count).

Triton runs these kernels on the CPU in its interpreter (``TRITON_INTERPRET=1`` set before
`triton` is imported, CPU tensors): that is how the tests hold them to the reference.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from adagrad.kernels.engine.rule import StepRule

#: parameter dtypes the kernel takes (the accumulator is float32).
PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK = 4096  # elements per program: 16 per thread of 8 warps (untuned: no GPU measured yet)
WARPS = 8
MAX_TENSORS = 256  # tensors per launch (the block search reads this many first-block numbers)
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def supports(param: Tensor, grad: Tensor, *states: Tensor) -> bool:
    """Whether the Triton kernels take this tensor (here and in `triton_members`):
    contiguous, the gradient in the parameter's dtype (a kernel dtype), float32 state."""
    return (param.dtype in PARAM_DTYPES and grad.dtype == param.dtype
            and all(s.dtype == torch.float32 and s.is_contiguous() for s in states)
            and param.is_contiguous() and grad.is_contiguous())


@triton.jit
def _adagrad_blocks(meta, n_tensors, lr_ptr, lr_value, eps, weight_decay,
                    accumulator_decay, TENSORS_PAD: tl.constexpr, BLOCK: tl.constexpr,
                    PARAM_DTYPE: tl.constexpr, LR_FROM_PTR: tl.constexpr,
                    MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
                    DECOUPLED: tl.constexpr, EPS_INSIDE: tl.constexpr):
    # meta rows (each n_tensors long): θ pointers, g pointers, G pointers, sizes, first blocks
    pid = tl.program_id(0).to(tl.int64)
    slots = tl.arange(0, TENSORS_PAD)
    first_blocks = tl.load(meta + 4 * n_tensors + slots, mask=slots < n_tensors,
                           other=9223372036854775807)
    tensor = tl.sum((first_blocks <= pid).to(tl.int32), axis=0) - 1
    block = pid - tl.load(meta + 4 * n_tensors + tensor)
    size = tl.load(meta + 3 * n_tensors + tensor)
    param_ptr = tl.load(meta + tensor).to(tl.pointer_type(PARAM_DTYPE))
    grad_ptr = tl.load(meta + n_tensors + tensor).to(tl.pointer_type(PARAM_DTYPE))
    sum_ptr = tl.load(meta + 2 * n_tensors + tensor).to(tl.pointer_type(tl.float32))
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < size
    theta = tl.load(param_ptr + offsets, mask=mask).to(tl.float32)
    g = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    state = tl.load(sum_ptr + offsets, mask=mask)
    if LR_FROM_PTR:
        lr = tl.load(lr_ptr).to(tl.float32) * lr_value
    else:
        lr = lr_value
    if MAXIMIZE:
        g = -g
    if HAS_WEIGHT_DECAY:
        if DECOUPLED:
            theta = theta * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * theta
    state = accumulator_decay * state + g * g
    if EPS_INSIDE:
        denom = tl.sqrt_rn(state + eps)
        denom = tl.where(denom == 0, 1.0, denom)  # G + ε == 0 only where g == 0
    else:
        denom = tl.sqrt_rn(state) + eps
    theta = theta - lr * tl.div_rn(g, denom)
    tl.store(param_ptr + offsets, theta.to(PARAM_DTYPE), mask=mask)
    tl.store(sum_ptr + offsets, state, mask=mask)


@functools.lru_cache(maxsize=64)
def _device_table(device: torch.device, entries: tuple[int, ...]) -> Tensor:
    """The launch table on ``device`` (cached: it depends only on its contents)."""
    return torch.tensor(entries, dtype=torch.int64).to(device, non_blocking=True)


def launch_table(params: list[Tensor], grads: list[Tensor],
                 sums: list[Tensor]) -> tuple[Tensor, int]:
    """The device table of one launch and its number of blocks; tensors of size 0 are
    left out (they may be in the lists)."""
    kept = [i for i, param in enumerate(params) if param.numel() > 0]
    sizes = [params[i].numel() for i in kept]
    first_blocks, total = [], 0
    for size in sizes:
        first_blocks.append(total)
        total += triton.cdiv(size, BLOCK)
    entries = ([params[i].data_ptr() for i in kept] + [grads[i].data_ptr() for i in kept]
               + [sums[i].data_ptr() for i in kept] + sizes + first_blocks)
    return _device_table(params[0].device, tuple(entries)), total


def dense_adagrad_(params: list[Tensor], grads: list[Tensor], sums: list[Tensor],
                   rule: StepRule, lr: Tensor | None = None) -> None:
    """One dense Adagrad step (:ref:`algo-adagrad`) of every tensor, in place.

    All tensors share one device, dtype and rule and pass `supports`. The step's learning
    rate is ``rule.lr``, or ``lr·rule.lr`` when ``lr`` (a 0-d tensor on the tensors'
    device) is given: then the kernel reads it, and the host never does.
    """
    for start in range(0, len(params), MAX_TENSORS):
        chunk = slice(start, start + MAX_TENSORS)
        _launch(params[chunk], grads[chunk], sums[chunk], rule, lr)


def _launch(params: list[Tensor], grads: list[Tensor], sums: list[Tensor], rule: StepRule,
            lr: Tensor | None) -> None:
    if not params:
        return
    table, blocks = launch_table(params, grads, sums)
    if blocks == 0:
        return
    tensors = table.numel() // 5
    _adagrad_blocks[(blocks,)](
        table, tensors, table if lr is None else lr, rule.lr, rule.eps,
        rule.weight_decay, rule.accumulator_decay,
        TENSORS_PAD=max(16, triton.next_power_of_2(tensors)), BLOCK=BLOCK,
        PARAM_DTYPE=_TL_DTYPES[params[0].dtype], LR_FROM_PTR=lr is not None,
        MAXIMIZE=rule.maximize, HAS_WEIGHT_DECAY=rule.weight_decay != 0,
        DECOUPLED=rule.decoupled, EPS_INSIDE=rule.eps_inside, num_warps=WARPS)
