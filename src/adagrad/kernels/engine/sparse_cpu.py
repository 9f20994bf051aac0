"""The sparse row engine on the CPU, and Adagrad's sparse kernel as its first client.

A sparse step of a ``(rows, D)`` table (``indices`` may repeat, unsorted;
:ref:`algo-sparse`) is, for every member of the family, the same work around a different row update: the
engine validates the indices, groups the positions by row, sums each row's duplicates and
hands each touched row, once, to the member's ``update_row``. No temporary the size of the
table and no coalesced copy of the gradient: the grouping is a hash of the touched rows,
and only rows touched more than once get a summed copy; the others are read in place.

The gradient: position ``k`` contributes ``scale[k]·values[value_of[k]]`` to row
``indices[k]``; the kernels take the three arrays as one plain tuple
``grad = (values, value_of, scale)``, ``value_of`` empty meaning the identity and a
1-element ``scale`` applying to every position. For a COO gradient ``value_of`` is the
identity and the scale 1; a fused embedding-bag backward passes its output gradient with
each position's bag (and per-sample weight), so that the ``(nnz, D)`` gradient is never
built.

Grouping. In parallel, the rows are shared out by a hash of the row into one partition per
thread, and the positions are first sorted by partition (a counting sort: each thread
counts the partitions of a contiguous chunk of positions, a prefix sum gives every (chunk,
partition) its place, each thread scatters its chunk). Then each thread groups, sums and
updates the rows of one partition on its own: no row shared, no merge. Scratch memory is
O(n) in all, whatever the number of threads (the partition-ordered positions and a 16-bit
partition note per position, plus each partition's hash table sized to its own
positions), and O(threads²) for the counts. One partition (the serial kernels, or one
thread) takes the positions as they are, with no partition pass. Each row's duplicates are
summed in ascending position order (the counting sort keeps each partition's positions in
order), so the result is bit-identical for any number of threads or partitions.

Plugging a member in (Adagrad's client at the end of this module is the model):

1. The row update, ``@numba.njit(inline="always", error_model="numpy")``::

       update_row(tables, row, grad_row, factor, coefficients, load, store)

   called once per touched row: ``row`` the row number, its summed gradient
   ``grad_row[d] * factor`` for ``d < D`` (``grad_row`` a 1-D view, of the summed copy
   with ``factor`` 1 for a repeated row, of ``values`` in place with the position's scale
   for a row touched once: one multiply in the loop, which vectorises), ``tables`` and
   ``coefficients`` the member's tuples as its kernel builds them, ``load``/``store``
   the parameter storage's (`load_float`/`store_float`, `load_bf16`/`store_bf16` of
   `elementwise`; arithmetic in float32 for bf16). ``tables`` is any tuple of arrays
   indexed by row: ``(param, sum)`` for Adagrad, ``(param, sum_per_row)`` with a 1-D sum
   for row-wise Adagrad, ``(param, z, n)`` for FTRL; ``tables[0]`` is the parameter.
   Write each coordinate loop as a plain ``for d in range(D)`` over scalars.

   Numba 0.68 pitfall: inside a prange, writes to arrays unpacked from a tuple
   (``param, state = tables``) are dropped as dead code. Index instead
   (``param = tables[0]``), for ``tables`` and for any tuple of arrays in
   ``coefficients``; test the member at 2 threads or more.

2. The prefetch hook, same decorator: ``prefetch(tables, row)`` starts loading the rows
   that ``update_row`` will touch a few rows ahead (`prefetch_row` of `elementwise` for
   each 2-D table: touched rows are scattered in memory); `prefetch_nothing` where there
   is nothing worth it. The engine prefetches the gradient rows itself.

3. Four top-level kernels, ``@numba.njit(cache=True, error_model="numpy")`` for the
   serial pair and ``@numba.njit(parallel=True, cache=True, error_model="numpy")`` for the
   parallel pair, for float (float32/float64) and bf16 parameters. Their arguments: the
   tables, then ``indices, grad``, then the coefficients, then (parallel) ``parts``. The
   member's functions are module globals (a kernel that takes a function as an argument
   is not cached by numba: it would recompile in every process), and the ``tables`` and
   ``coefficients`` tuples are built inside the prange body (a parallel loop cannot take
   a tuple of tuples from outside it, and one of arrays loses its writes there)::

       @numba.njit(cache=True, error_model="numpy")
       def _float_serial(param, state, indices, grad, coefficient):
           update_rows_serial((param, state), indices, grad, (coefficient,), _my_row,
                              _my_prefetch, load_float, store_float)

       @numba.njit(parallel=True, cache=True, error_model="numpy")
       def _float_parallel(param, state, indices, grad, coefficient, parts):
           order, starts = partition_positions(indices, parts)
           for part in numba.prange(parts):
               update_partition((param, state), indices, grad, (coefficient,), order,
                                starts, part, _my_row, _my_prefetch, load_float,
                                store_float)

   and the same with ``load_bf16, store_bf16``. Put them in two dicts keyed by "bfloat16
   parameter", ``_SERIAL = {False: _float_serial, True: _bf16_serial}`` and ``_PARALLEL``.

4. The Python entry point: `update_rows_` does the rest (index validation, with
   IndexError before anything is written; numpy views, bf16 as raw words; the grad tuple;
   serial below `PARALLEL_MIN_ELEMENTS` elements of work, else parallel with one
   partition per numba thread, the pool started without touching torch's thread count)::

       update_rows_(_SERIAL, _PARALLEL, (param, state), indices, values,
                    (coefficient,), value_of, scale)

A member whose row updates also add to a sum (DoGAdagrad's distance terms) gives
`update_rows_` a fixed ``parts`` and adds each row's share into the slot of its partition
(`partition_of(row, parts)`; the serial kernel's single slot for small steps): one thread
per slot, and the same partitions, rows and order whatever the thread count.

Not covered: an update that needs a reduction over all touched rows before any row is
written (AdaGrad-Norm's global accumulator) has to make that pass itself.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.engine.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    PARALLEL_MIN_ELEMENTS,
    adagrad_coordinate,
    as_numpy,
    load_bf16,
    load_float,
    prefetch_row,
    rule_tuple,
    scalar_type,
    start_thread_pool,
    store_bf16,
    store_float,
)
from adagrad.kernels.engine.rule import StepRule
from adagrad.kernels.engine.splitmix import splitmix64 as _mix

_NO_SNAPSHOTS = np.zeros(0, np.float64)
_IDENTITY = np.zeros(0, np.int64)  # value_of for a COO gradient: position k reads row k
ALL_POSITIONS = np.zeros(0, np.int64)  # order for the serial kernels: positions 0..n-1
PREFETCH_AHEAD = 8  # rows: touched rows are scattered, so their loads are overlapped
_MAX_PARTS = 1 << 16  # partitions: each position's is noted in 16 bits


@numba.njit(inline="always", error_model="numpy")
def _source(value_of, k):
    """The row of ``values`` that position ``k`` reads."""
    return value_of[k] if value_of.size > 0 else k


@numba.njit(inline="always", error_model="numpy")
def _scale(scale, k):
    """Position ``k``'s factor."""
    return scale[k] if scale.size > 1 else scale[0]


@numba.njit(cache=True, error_model="numpy")
def first_out_of_range(indices, num_rows):
    """The first position whose index lies outside ``[0, num_rows)``, or -1."""
    for k in range(indices.size):
        if indices[k] < 0 or indices[k] >= num_rows:
            return k
    return -1


# ------------------------------------------------------------------ partitioning


@numba.njit(inline="always", error_model="numpy")
def partition_of(row, parts):
    """The partition, in ``[0, parts)``, of a row: the high 32 bits of its hash scaled to
    ``parts`` (a multiply and a shift, valid for any ``parts`` below 2³²)."""
    high = _mix(row) >> np.uint64(32)
    return np.int64((high * np.uint64(parts)) >> np.uint64(32))


@numba.njit(inline="always", error_model="numpy")
def _position(order, j):
    """The ``j``-th position in partition order; ``order`` empty means the identity."""
    return order[j] if order.size > 0 else j


@numba.njit(inline="always", error_model="numpy")
def _chunk(c, chunks, n):
    """Positions ``[lo, hi)`` of contiguous chunk ``c`` of ``chunks`` over ``n``."""
    return c * n // chunks, (c + 1) * n // chunks


@numba.njit(inline="always", error_model="numpy")
def _count_chunk(indices, lo, hi, counts, part):
    """Count positions ``[lo, hi)`` per partition into ``counts`` (one row of the
    histogram, of ``parts`` entries), and note each one's partition in ``part``. Counted
    in a local array first, so that threads never write the same cache line."""
    parts = counts.size
    local = np.zeros(parts, np.int64)
    for k in range(lo, hi):
        p = partition_of(indices[k], parts)
        part[k] = p
        local[p] += 1
    counts[:] = local


@numba.njit(inline="always", error_model="numpy")
def _cursors_from_counts(counts):
    """Turn the ``(chunks, parts)`` histogram into each (chunk, partition)'s first place
    in partition order, in place: partition-major, chunk-major within a partition, so that
    each partition's positions stay in ascending order. Returns the partitions' starts
    (``parts + 1`` entries, the last one ``n``)."""
    chunks, parts = counts.shape
    starts = np.empty(parts + 1, np.int64)
    total = 0
    for p in range(parts):
        starts[p] = total
        for c in range(chunks):
            count = counts[c, p]
            counts[c, p] = total
            total += count
    starts[parts] = total
    return starts


@numba.njit(inline="always", error_model="numpy")
def _scatter_chunk(part, lo, hi, cursors, order):
    """Write positions ``[lo, hi)`` at their places in ``order``; ``cursors`` is this
    chunk's row of `_cursors_from_counts` (advanced in a local copy).

    The partitions come from `_count_chunk`'s notes, not hashed again: with the hash in
    this loop the cursor loads wait on it, and the loop ran 6x slower (measured).
    """
    local = cursors.copy()
    for k in range(lo, hi):
        p = part[k]
        order[local[p]] = k
        local[p] += 1


@numba.njit(parallel=True, cache=True, error_model="numpy")
def partition_positions(indices, parts):
    """Sort the positions by the partition of their row (a stable, parallel counting
    sort, one contiguous chunk of positions per partition/thread).

    Returns ``(order, starts)``: partition ``p``'s positions, in ascending order, are
    ``order[starts[p]:starts[p + 1]]``. Scratch: ``order`` (8 bytes per position), each
    position's partition (2 bytes, freed on return) and the ``parts × parts`` histogram;
    none for one partition. At most ``2¹⁶`` partitions.
    """
    n = indices.size
    if parts == 1:  # one partition: the positions 0..n-1 (`_position` of an empty order)
        return np.empty(0, np.int64), np.array([0, n], np.int64)
    if parts > _MAX_PARTS:
        raise ValueError("at most 65536 partitions")
    counts = np.empty((parts, parts), np.int64)
    part = np.empty(n, np.uint16)
    for c in numba.prange(parts):
        lo, hi = _chunk(c, parts, n)
        _count_chunk(indices, lo, hi, counts[c], part)
    starts = _cursors_from_counts(counts)
    order = np.empty(n, np.int64)
    for c in numba.prange(parts):
        lo, hi = _chunk(c, parts, n)
        _scatter_chunk(part, lo, hi, counts[c], order)
    return order, starts


# ------------------------------------------------------------------ one partition


@numba.njit(inline="always", error_model="numpy")
def _probe(slots, mask, rows, row, distinct):
    """The number of ``row`` in an open-addressing table (``slots`` holds row numbers,
    -1 for empty; linear probing from the low bits of the row's hash). A row not seen
    yet gets number ``distinct`` and is entered in ``slots`` and ``rows``."""
    slot = _mix(row) & mask  # the low bits: independent of the partition's high bits
    while True:
        u = slots[slot]
        if u == -1:
            slots[slot] = distinct
            rows[distinct] = row
            return distinct
        if rows[u] == row:
            return u
        slot = (slot + np.uint64(1)) & mask


# `_group_part` and `_sum_duplicates` run once per partition and take no member function:
# they are compiled as functions of their own (once per process, shared by every member's
# kernel), not inlined (`inline="always"` copies a callee's IR at every level of inlining
# above it, and the whole kernel is then typed at once). With the numpy constructors they
# no longer call (np.full, np.zeros, np.array: each a function numba compiles on its own),
# a member's cold serial kernel compiles 6 functions besides itself instead of 15, in
# ~0.85x the CPU time (`docs/cold-start.md`).
@numba.njit(error_model="numpy")
def _group_part(indices, order, lo, hi):
    """Group the positions ``order[lo:hi]`` (a partition's, ascending) by row, with a hash
    table of about twice their number.

    Returns ``(rows, first, counts, row_of)``: the partition's distinct rows in first-seen
    order, the position of each one's first occurrence and its number of occurrences; and
    for its ``j``-th position, the number of that position's row.
    """
    m = hi - lo
    capacity = 2
    while capacity < 2 * m:
        capacity *= 2
    slots = np.empty(capacity, np.int32)
    for slot in range(capacity):  # all empty (np.full: one more function to compile)
        slots[slot] = -1
    rows = np.empty(m, np.int64)
    first = np.empty(m, np.int64)
    counts = np.empty(m, np.int32)
    row_of = np.empty(m, np.int32)
    distinct = 0
    for j in range(m):
        k = _position(order, lo + j)
        u = _probe(slots, np.uint64(capacity - 1), rows, np.int64(indices[k]), distinct)
        if u == distinct:
            first[u] = k
            counts[u] = 0
            distinct += 1
        row_of[j] = u
        counts[u] += 1
    return rows[:distinct], first[:distinct], counts[:distinct], row_of


@numba.njit(error_model="numpy")
def _sum_duplicates(grad, order, lo, counts, row_of):
    """Sum the contributions of every row touched more than once, in position order (one
    streaming pass over the partition's positions ``order[lo:lo + row_of.size]``).

    Returns ``(slot, sums)``: row u's sum is ``sums[slot[u]]`` where ``slot[u] >= 0``;
    rows touched once keep ``slot[u] == -1`` and are read in place.
    """
    values, value_of, scale = grad
    slot = np.empty(counts.size, np.int64)
    repeated = 0
    for u in range(counts.size):
        if counts[u] > 1:
            slot[u] = repeated
            repeated += 1
        else:
            slot[u] = -1
    sums = np.empty((repeated, values.shape[1]), values.dtype)
    for target in range(repeated):  # zeros (np.zeros: one more function to compile)
        for d in range(values.shape[1]):
            sums[target, d] = 0
    for j in range(row_of.size):
        target = slot[row_of[j]]
        if target >= 0:
            k = _position(order, lo + j)
            source = _source(value_of, k)
            factor = _scale(scale, k)
            for d in range(values.shape[1]):
                sums[target, d] += values[source, d] * factor
    return slot, sums


# ------------------------------------------------------------------ the engine


@numba.njit(inline="always", error_model="numpy")
def prefetch_nothing(tables, row):
    """The prefetch hook of a member with nothing worth prefetching."""


@numba.njit(inline="always", error_model="numpy")
def update_partition(tables, indices, grad, coefficients, order, starts, part, update_row,
                     prefetch, load, store):
    """Group and sum by row the positions of partition ``part``,
    ``order[starts[part]:starts[part + 1]]`` (`partition_positions`; an empty ``order``
    stands for positions 0..n-1), and hand each row once to ``update_row``, prefetching
    rows a few places ahead with their gradient rows."""
    values, value_of, scale = grad
    lo = starts[part]
    rows, first, counts, row_of = _group_part(indices, order, lo, starts[part + 1])
    slot, sums = _sum_duplicates(grad, order, lo, counts, row_of)
    one = sums.dtype.type(1.0)
    for u in range(rows.size):
        ahead = u + PREFETCH_AHEAD
        if ahead < rows.size:
            prefetch(tables, rows[ahead])
            if slot[ahead] < 0:
                prefetch_row(values, _source(value_of, first[ahead]))
        if slot[u] >= 0:
            grad_row, factor = sums[slot[u]], one
        else:
            grad_row = values[_source(value_of, first[u])]
            factor = _scale(scale, first[u])
        update_row(tables, rows[u], grad_row, factor, coefficients, load, store)


@numba.njit(inline="always", error_model="numpy")
def update_rows_serial(tables, indices, grad, coefficients, update_row, prefetch, load,
                       store):
    """The body of a member's serial kernel: every position as one partition."""
    starts = np.empty(2, np.int64)  # (np.array of a list: one more function to compile)
    starts[0] = 0
    starts[1] = indices.size
    update_partition(tables, indices, grad, coefficients, ALL_POSITIONS, starts, 0, update_row,
                     prefetch, load, store)


def update_rows_(serial: dict, parallel: dict, tables: tuple[Tensor, ...], indices: Tensor,
                 values: Tensor, coefficients: tuple, value_of: Tensor | None = None,
                 scale: Tensor | None = None, parts: int | None = None) -> None:
    """Run a member's engine kernel on a sparse gradient, in place: the Python side of
    every client.

    ``serial`` and ``parallel`` are the member's kernels keyed by "bfloat16 parameter";
    ``tables`` its state tensors (contiguous, CPU; ``tables[0]`` the ``(rows, D)``
    parameter), ``coefficients`` the rest of its kernels' arguments, already numba types
    (scalars, tuples, numpy arrays). Indices are checked against the parameter's rows
    before anything is written (IndexError). Below `PARALLEL_MIN_ELEMENTS` elements of
    work the serial kernel runs; above, the parallel one with ``parts`` partitions (None:
    one per numba thread).
    """
    param = tables[0]
    indices = indices.contiguous().numpy()
    bad = first_out_of_range(indices, param.shape[0])
    if bad >= 0:
        raise IndexError(f"sparse gradient index {indices[bad]} is out of range for a table "
                         f"of {param.shape[0]} rows")
    args = (*(as_numpy(table) for table in tables), indices,
            _grad_arrays(values, value_of, scale), *coefficients)
    bf16 = param.dtype == torch.bfloat16
    if indices.size * values.shape[1] >= PARALLEL_MIN_ELEMENTS:
        start_thread_pool()
        parallel[bf16](*args, numba.get_num_threads() if parts is None else parts)
    else:
        serial[bf16](*args)


def _grad_arrays(values: Tensor, value_of: Tensor | None, scale: Tensor | None) -> tuple:
    """The kernels' ``grad`` tuple ``(values, value_of, scale)`` as numpy arrays: an empty
    ``value_of`` for the identity, a 1-element ``scale`` of 1 for none."""
    scale = torch.ones(1, dtype=values.dtype) if scale is None else scale.to(values.dtype)
    return (values.detach().contiguous().numpy(),
            _IDENTITY if value_of is None else value_of.long().contiguous().numpy(),
            scale.detach().contiguous().numpy())


# ------------------------------------------------------------------ Adagrad, a client


@numba.njit(inline="always", error_model="numpy")
def _catch_up(param, state_sum, row, clocks, load, store):
    """Apply row ``row``'s pending lazy decay (the `RowClocks` logs) and move its
    snapshots to now; a no-op where the snapshots are empty.

    The tuple is indexed, not unpacked: inside a prange loop, numba 0.68 drops writes to
    arrays unpacked from a tuple in an inlined function (the snapshots stayed stale).
    """
    param_log = clocks[0]
    row_param_log = clocks[1]
    sum_log = clocks[2]
    row_sum_log = clocks[3]
    if row_param_log.size > 0:
        factor = math.exp(param_log - row_param_log[row])
        row_param_log[row] = param_log
        for d in range(param.shape[1]):
            param[row, d] = store(load(param[row, d]) * factor)
    if row_sum_log.size > 0:
        factor = math.exp(sum_log - row_sum_log[row])
        row_sum_log[row] = sum_log
        for d in range(state_sum.shape[1]):
            state_sum[row, d] = state_sum[row, d] * factor


@numba.njit(inline="always", error_model="numpy")
def _adagrad_row(tables, row, grad_row, factor, coefficients, load, store):
    """Catch the row up on its lazy decay, then :ref:`algo-adagrad` on it with its summed gradient.
    ``tables`` is ``(param, state_sum)``, ``coefficients`` ``(rule_tuple, clocks)``."""
    param = tables[0]
    state_sum = tables[1]
    rule = coefficients[0]
    _catch_up(param, state_sum, row, coefficients[1], load, store)
    for d in range(param.shape[1]):
        p, s = adagrad_coordinate(load(param[row, d]), grad_row[d] * factor, state_sum[row, d],
                                  rule)
        param[row, d] = store(p)
        state_sum[row, d] = s


@numba.njit(inline="always", error_model="numpy")
def _adagrad_prefetch(tables, row):
    prefetch_row(tables[0], row)
    prefetch_row(tables[1], row)


# One kernel per (parameter storage, threading), see dense_cpu and `update_rows_`. The
# same body runs 1.5-2x faster as a parfor than in plain njit (measured), hence the
# parallel kernel for large steps even at 1 thread.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, state_sum, indices, grad, rule, clocks):
    update_rows_serial((param, state_sum), indices, grad, (rule, clocks), _adagrad_row,
                       _adagrad_prefetch, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, state_sum, indices, grad, rule, clocks, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum), indices, grad, (rule, clocks), order, starts,
                         part, _adagrad_row, _adagrad_prefetch, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, state_sum, indices, grad, rule, clocks):
    update_rows_serial((param, state_sum), indices, grad, (rule, clocks), _adagrad_row,
                       _adagrad_prefetch, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, state_sum, indices, grad, rule, clocks, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum), indices, grad, (rule, clocks), order, starts,
                         part, _adagrad_row, _adagrad_prefetch, load_bf16, store_bf16)


_partition_positions = partition_positions  # its name in tests/test_sparse_partition.py

_SERIAL = {False: _float_serial, True: _bf16_serial}  # keyed by "bfloat16 parameter"
_PARALLEL = {False: _float_parallel, True: _bf16_parallel}


def supports(param: Tensor, state_sum: Tensor, values: Tensor) -> bool:
    """Whether this kernel can run the step: CPU, contiguous 2-D tables, supported dtypes."""
    return (param.device.type == "cpu" and values.device == param.device
            and state_sum.device == param.device and param.dim() == 2
            and param.dtype in KERNEL_PARAM_DTYPES and state_sum.dtype in KERNEL_STATE_DTYPES
            and values.dtype in (torch.float32, torch.float64)
            and param.is_contiguous() and state_sum.is_contiguous())


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step (:ref:`algo-sparse`) on a ``(rows, D)`` table, in place.

    Same contract as `adagrad.kernels.portable.sparse_adagrad_`, except that indices are
    validated here, before anything is written (IndexError).
    """
    rule = replace(rule, decoupled=False, accumulator_decay=1.0)  # both come through clocks
    update_rows_(_SERIAL, _PARALLEL, (param, state_sum), indices, values,
                 (rule_tuple(rule, scalar_type(state_sum)), _clock_tuple(clocks)), value_of,
                 scale)


def _clock_tuple(clocks: RowClocks) -> tuple:
    """`RowClocks` as the kernels take them: (param log, row snapshots, sum log, row
    snapshots), empty snapshot arrays where a decay is off."""
    return (float(clocks.param_log), _snapshots(clocks.row_param_log),
            float(clocks.sum_log), _snapshots(clocks.row_sum_log))


def _snapshots(row_log: Tensor | None) -> np.ndarray:
    return _NO_SNAPSHOTS if row_log is None else row_log.numpy()
