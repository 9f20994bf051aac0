"""Float64 reference rules for the Adagrad family, written straight from docs/algorithms.md.

These are the oracle for the test suite: one small pure function per algorithm, written for
reading, not for speed. Every function takes numpy arrays and plain Python numbers and
returns *new* arrays and a *new* state dict; nothing is modified in place.

Conventions shared by every rule:

* Everything is computed in float64 (inputs are converted with ``np.asarray(x, float64)``).
* ``state["step"]`` is the per-tensor step count ``t`` (a Python int); it is incremented
  *before* it is used, so the first update is at ``t = 1``.
* Parameters are real. A complex parameter is handled by the caller exactly as torch does:
  pass ``torch.view_as_real(p)`` (and the gradient likewise); the accumulator then starts at
  ``complex(v, v)``, i.e. ``v`` in both the real and the imaginary slot, which is what
  :func:`adagrad_init` gives for the real view.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "lr_at",
    "distinct_rows",
    "adagrad_init",
    "adagrad",
    "adagrad_sparse_init",
    "adagrad_sparse",
    "adagrad_sparse_flush",
    "rowwise_adagrad_init",
    "rowwise_adagrad",
    "rowwise_adagrad_sparse_init",
    "rowwise_adagrad_sparse",
    "rowwise_adagrad_sparse_flush",
    "proximal_adagrad_init",
    "proximal_adagrad",
    "proximal_adagrad_sparse",
    "adagrad_da_init",
    "adagrad_da",
    "adagrad_da_weights",
    "adagrad_da_sparse",
    "ftrl_init",
    "ftrl",
    "adagrad_norm_init",
    "adagrad_norm",
    "full_matrix_adagrad_init",
    "full_matrix_adagrad",
    "dog_adagrad_init",
    "dog_adagrad",
]

EPS_PLACEMENTS = ("outside", "inside")
SPARSE_WEIGHT_DECAY_MODES = (None, "lazy", "touched")

State = dict[str, Any]


def _f64(x: Any) -> np.ndarray:
    return np.array(x, dtype=np.float64, copy=True)


def lr_at(lr: float, lr_decay: float, t: int) -> float:
    """Inverse-time decayed learning rate ``lr_t = lr / (1 + (t-1)·lr_decay)`` (:ref:`algo-adagrad`)."""
    return float(lr) / (1.0 + (t - 1) * float(lr_decay))


def _preconditioned(g: np.ndarray, G: np.ndarray, eps: float, eps_placement: str) -> np.ndarray:
    """``g / (sqrt(G) + eps)`` (outside) or ``g / sqrt(G + eps)`` (inside) (:ref:`algo-adagrad`).

    Inside: where ``G + eps == 0`` the update is 0 (then ``g`` is necessarily 0 too).
    Outside: plain division, exactly as torch computes it (``0/0`` is NaN if ``eps == 0``
    and ``G == 0``, as in ``torch.optim.Adagrad``).
    """
    if eps_placement == "outside":
        with np.errstate(divide="ignore", invalid="ignore"):
            return g / (np.sqrt(G) + eps)
    if eps_placement == "inside":
        denom = np.sqrt(G + eps)
        out = np.zeros_like(g)
        nz = denom != 0
        out[nz] = g[nz] / denom[nz]
        return out
    raise ValueError(f"Invalid eps_placement value: {eps_placement!r}")


# --------------------------------------------------------------------------------------
# :ref:`algo-adagrad` Adagrad (diagonal)
# --------------------------------------------------------------------------------------


def adagrad_init(param: Any, initial_accumulator_value: float = 0.0) -> State:
    """Initial state of :ref:`algo-adagrad`: ``{"step": 0, "sum": G0}`` with ``G0`` filled with the value."""
    p = np.asarray(param, dtype=np.float64)
    return {"step": 0, "sum": np.full(p.shape, float(initial_accumulator_value), np.float64)}


def adagrad(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    eps_placement: str = "outside",
    decoupled_weight_decay: bool = False,
    accumulator_decay: float = 1.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """One step of diagonal Adagrad, :ref:`algo-adagrad`.

    ::

        t    <- t + 1
        g    <- -g                         if maximize
        g    <- g + wd·θ                   coupled (L2) weight decay, the default
        θ    <- θ·(1 - lr_t·wd)            instead, if decoupled_weight_decay
        lr_t  = lr / (1 + (t-1)·lr_decay)
        G    <- ρ·G + g²                   ρ = accumulator_decay
        θ    <- θ - lr_t·g / (sqrt(G) + ε)  eps_placement="outside"
        θ    <- θ - lr_t·g / sqrt(G + ε)    eps_placement="inside" (0 where G + ε == 0)

    Args:
      param: the parameter θ (real; see the module docstring for complex).
      grad: the gradient g, same shape.
      state: ``{"step": int, "sum": ndarray}`` as from :func:`adagrad_init`.

    Returns:
      ``(new_param, new_state)``, both float64, fresh objects.
    """
    theta = _f64(param)
    g = _f64(grad)
    if g.shape != theta.shape:
        raise ValueError(f"grad shape {g.shape} does not match param shape {theta.shape}")
    t = int(state["step"]) + 1
    G = _f64(state["sum"])
    if maximize:
        g = -g
    lr_t = lr_at(lr, lr_decay, t)
    if weight_decay != 0:
        if decoupled_weight_decay:
            theta = theta * (1.0 - lr_t * weight_decay)
        else:
            g = g + weight_decay * theta
    G = accumulator_decay * G + g * g
    theta = theta - lr_t * _preconditioned(g, G, eps, eps_placement)
    return theta, {"step": t, "sum": G}


# --------------------------------------------------------------------------------------
# :ref:`algo-sparse` Sparse gradients
# --------------------------------------------------------------------------------------


def adagrad_sparse_init(param: Any, initial_accumulator_value: float = 0.0) -> State:
    """Initial state of :ref:`algo-sparse`: :func:`adagrad_init` plus per-row bookkeeping.

    ``last[r]`` is the step row r was last brought up to date at (lazy weight decay and
    lazy accumulator decay); ``lr_history[s-1]`` is ``lr_s`` for every step s taken so far.
    """
    state = adagrad_init(param, initial_accumulator_value)
    p = np.asarray(param)
    rows = p.shape[0] if p.ndim >= 1 else 1
    state["last"] = np.zeros(rows, dtype=np.int64)
    state["lr_history"] = []
    return state


def distinct_rows(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of the (non-negative) row indices ``idx``, ascending (as
    ``np.unique``), and each position's place among them (as ``np.searchsorted``): the
    rows a sparse step touches, which the sparse references update row by row."""
    touched = np.bincount(idx) > 0
    return np.flatnonzero(touched), (np.cumsum(touched) - 1)[idx]


def _copy_sparse_state(param: np.ndarray, state: State) -> State:
    new = {"step": int(state["step"]), "sum": _f64(state["sum"])}
    rows = param.shape[0]
    last = state.get("last")
    new["last"] = (
        np.full(rows, int(state["step"]), np.int64) if last is None else np.array(last, np.int64)
    )
    new["lr_history"] = list(state.get("lr_history", []))
    return new


def _decay_factors(last: np.ndarray, upto: int, lr_history: list[float],
                   weight_decay: float) -> np.ndarray:
    """``Π_{s=last[r]+1..upto}(1 - lr_s·wd)`` for each entry r of ``last``: the decoupled
    decay each row missed (:ref:`algo-sparse`), multiplied in step order (1 where none)."""
    factor = np.ones(last.shape, np.float64)
    for s in range(int(last.min(initial=upto)) + 1, upto + 1):
        factor = np.where(last < s, factor * (1.0 - lr_history[s - 1] * weight_decay), factor)
    return factor


def _per_row(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per-row ``values`` shaped to broadcast over the rows' trailing dimensions."""
    return values.reshape(values.shape + (1,) * (table.ndim - 1))


def _catch_up_rows(
    theta: np.ndarray,
    state: State,
    rows: np.ndarray,
    upto: int,
    *,
    weight_decay: float,
    accumulator_decay: float,
    sparse_weight_decay: str | None,
) -> None:
    """Bring ``rows`` (distinct) lazily up to step ``upto`` (in place, on the copies made by
    the callers); rows already there are left alone.

    θ_r <- θ_r · Π_{s=last+1..upto}(1 - lr_s·wd)     (sparse_weight_decay="lazy")
    G_r <- ρ^(upto-last) · G_r                          (accumulator_decay ρ < 1)
    """
    G = state["sum"]
    last = state["last"]
    rows = rows[last[rows] < upto]
    if sparse_weight_decay == "lazy" and weight_decay != 0:
        factor = _decay_factors(last[rows], upto, state["lr_history"], weight_decay)
        theta[rows] = theta[rows] * _per_row(factor, theta)
    if accumulator_decay != 1.0:
        G[rows] = G[rows] * _per_row(accumulator_decay ** (upto - last[rows]), G)
    last[rows] = upto


def adagrad_sparse(
    param: Any,
    indices: Any,
    values: Any,
    state: State,
    *,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    eps_placement: str = "outside",
    decoupled_weight_decay: bool = False,
    accumulator_decay: float = 1.0,
    maximize: bool = False,
    sparse_weight_decay: str | None = None,
) -> tuple[np.ndarray, State]:
    """One step of Adagrad with a sparse (row) gradient, :ref:`algo-sparse`.

    The gradient is given in COO form as the row ``indices`` (``[nnz]`` or ``[1, nnz]``,
    duplicates allowed) and ``values`` (``[nnz, *param.shape[1:]]``). Semantics:

    1. duplicates are summed first: ``g_r = Σ values[k]`` over ``indices[k] == r``;
    2. ``t <- t + 1`` and ``lr_t`` are per tensor, exactly as dense (also when nnz == 0);
    3. each touched row is first brought up to step t lazily (see below), then gets the
       dense :ref:`algo-adagrad` formula (maximize, L2 on touched rows, ``G <- ρG + g²``, ε placement);
       untouched rows keep θ and G (until a later touch or :func:`adagrad_sparse_flush`).

    Weight decay (``weight_decay != 0``) needs a mode, as in the optimizer:

    * ``"touched"``: ``g_r <- g_r + wd·θ_r`` on touched rows only (not dense L2).
    * ``"lazy"``: decoupled; a touched row is first multiplied by
      ``Π_{s=last+1..t}(1 - lr_s·wd)``, which includes step t's own decay, then updated
      without further decay.
    * ``None`` with ``weight_decay != 0``: ``ValueError`` (torch refuses it too).

    ``decoupled_weight_decay`` is accepted for signature symmetry with :func:`adagrad` and
    ignored: the mode decides the decay style.

    With ``accumulator_decay`` ρ < 1, an untouched row's G is decayed lazily the same way:
    on its next touch at step t, ``G_r <- ρ^(t-1-last)·G_r`` and then the step's own
    ``G_r <- ρ·G_r + g_r²`` (together ``ρ^(t-last)·G_r + g_r²``). After
    :func:`adagrad_sparse_flush` the result equals dense :func:`adagrad` (with decoupled
    decay for ``"lazy"``) fed the gradient with zero rows.

    The state is :func:`adagrad_sparse_init`'s (a plain :func:`adagrad_init` state is
    accepted and gets the bookkeeping keys added).
    """
    del decoupled_weight_decay
    if sparse_weight_decay not in SPARSE_WEIGHT_DECAY_MODES:
        raise ValueError(f"Invalid sparse_weight_decay value: {sparse_weight_decay!r}")
    if weight_decay != 0 and sparse_weight_decay is None:
        raise ValueError("weight_decay with sparse gradients needs sparse_weight_decay")
    theta = _f64(param)
    if theta.ndim == 0:
        raise ValueError("a sparse row gradient needs a parameter with at least 1 dimension")
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim == 2:
        if idx.shape[0] != 1:
            raise ValueError(f"expected sparse_dim == 1 indices, got shape {idx.shape}")
        idx = idx[0]
    vals = np.asarray(values, dtype=np.float64).reshape((idx.shape[0],) + theta.shape[1:])
    rows_total = theta.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= rows_total):
        raise IndexError(f"row index out of range for a table of {rows_total} rows")

    new = _copy_sparse_state(theta, state)
    t = new["step"] + 1
    lr_t = lr_at(lr, lr_decay, t)
    new["step"] = t
    new["lr_history"].append(lr_t)

    # 1. sum duplicates
    rows, pos = distinct_rows(idx)
    g = np.zeros((rows.size,) + theta.shape[1:], np.float64)
    np.add.at(g, pos, vals)

    # 3. catch up touched rows to step t-1 for G, to step t for lazy decay (incl. step t)
    last = new["last"][rows]
    if sparse_weight_decay == "lazy" and weight_decay != 0:
        factor = _decay_factors(last, t, new["lr_history"], weight_decay)
        theta[rows] = theta[rows] * _per_row(factor, theta)
    if accumulator_decay != 1.0:
        new["sum"][rows] = new["sum"][rows] * _per_row(accumulator_decay ** (t - 1 - last),
                                                       new["sum"])
    new["last"][rows] = t

    # dense :ref:`algo-adagrad` formula on the touched rows
    G = new["sum"]
    if maximize:
        g = -g
    if sparse_weight_decay == "touched" and weight_decay != 0:
        g = g + weight_decay * theta[rows]
    G_rows = accumulator_decay * G[rows] + g * g
    G[rows] = G_rows
    theta[rows] = theta[rows] - lr_t * _preconditioned(g, G_rows, eps, eps_placement)
    return theta, new


def adagrad_sparse_flush(
    param: Any,
    state: State,
    *,
    weight_decay: float = 0.0,
    accumulator_decay: float = 1.0,
    sparse_weight_decay: str | None = None,
) -> tuple[np.ndarray, State]:
    """Bring every row up to the current step (:ref:`algo-sparse`: ``flush()`` / before ``state_dict()``).

    Every row r with ``last[r] < t`` gets ``θ_r <- θ_r·Π_{s=last+1..t}(1 - lr_s·wd)``
    (``"lazy"`` mode) and ``G_r <- ρ^(t-last)·G_r`` (ρ < 1); then ``last[r] = t``.
    """
    theta = _f64(param)
    new = _copy_sparse_state(theta, state)
    _catch_up_rows(
        theta,
        new,
        np.arange(theta.shape[0]),
        new["step"],
        weight_decay=weight_decay,
        accumulator_decay=accumulator_decay,
        sparse_weight_decay=sparse_weight_decay,
    )
    return theta, new


# --------------------------------------------------------------------------------------
# :ref:`algo-rowwise` Row-wise Adagrad
# --------------------------------------------------------------------------------------


def rowwise_adagrad_init(param: Any, initial_accumulator_value: float = 0.0) -> State:
    """Initial state of :ref:`algo-rowwise`: one accumulator per row (first dim) for ndim >= 2, else per element."""
    p = np.asarray(param, dtype=np.float64)
    shape = (p.shape[0],) if p.ndim >= 2 else p.shape
    return {"step": 0, "sum": np.full(shape, float(initial_accumulator_value), np.float64)}


def rowwise_adagrad(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """One step of row-wise Adagrad (FBGEMM ``EXACT_ROWWISE_ADAGRAD``), :ref:`algo-rowwise`.

    ::

        g'_r = g_r + wd·θ_r                         (L2 mode; g' = g otherwise)
        G_r <- G_r + mean_over_row(g'_r²)
        m_r  = lr_t / (sqrt(G_r) + ε)
        θ_r <- θ_r - m_r·g'_r                       (L2 or no decay)
        θ_r <- θ_r·(1 - lr_t·wd) - m_r·g_r          (decoupled)

    For ``param.ndim < 2`` this is element-wise :ref:`algo-adagrad` (ε outside). ``maximize`` negates g first
    (an assumption: :ref:`algo-rowwise` does not list it; it follows :ref:`algo-adagrad`).
    """
    theta = _f64(param)
    if theta.ndim < 2:
        return adagrad(param, grad, state, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                       eps=eps, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    g = _f64(grad)
    t = int(state["step"]) + 1
    G = _f64(state["sum"])
    if maximize:
        g = -g
    lr_t = lr_at(lr, lr_decay, t)
    gp = g + weight_decay * theta if (weight_decay != 0 and not decoupled_weight_decay) else g
    if int(np.prod(theta.shape[1:])) > 0:  # a row of width 0 adds nothing
        G = G + np.mean(gp * gp, axis=tuple(range(1, theta.ndim)))
    m = (lr_t / (np.sqrt(G) + eps)).reshape((-1,) + (1,) * (theta.ndim - 1))
    if weight_decay != 0 and decoupled_weight_decay:
        theta = theta * (1.0 - lr_t * weight_decay) - m * g
    else:
        theta = theta - m * gp
    return theta, {"step": t, "sum": G}


def rowwise_adagrad_sparse_init(param: Any, initial_accumulator_value: float = 0.0) -> State:
    """Initial state of :ref:`algo-rowwise` with sparse gradients: :func:`rowwise_adagrad_init` plus the
    per-row bookkeeping of :ref:`algo-sparse` (``last[r]``, the step row r was last brought up to date
    at, and ``lr_history``, ``lr_s`` of every step so far)."""
    state = rowwise_adagrad_init(param, initial_accumulator_value)
    p = np.asarray(param)
    state["last"] = np.zeros(p.shape[0] if p.ndim >= 1 else 1, dtype=np.int64)
    state["lr_history"] = []
    return state


def rowwise_adagrad_sparse(
    param: Any,
    indices: Any,
    values: Any,
    state: State,
    *,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    sparse_weight_decay: str | None = None,
) -> tuple[np.ndarray, State]:
    """One step of row-wise Adagrad (:ref:`algo-rowwise`) with a sparse row gradient (:ref:`algo-sparse`).

    ``indices`` (``[nnz]``, duplicates allowed) are rows of the first dimension and
    ``values`` (``[nnz, *param.shape[1:]]``) their gradients; a 1-d ``param`` is a table of
    rows of width 1, element-wise as :ref:`algo-rowwise` says. Semantics:

    1. duplicates are summed first: ``g_r = Σ values[k]`` over ``indices[k] == r``;
    2. ``t <- t + 1`` and ``lr_t`` are per tensor, as dense;
    3. the :ref:`algo-rowwise` formula is applied to the touched rows only; untouched rows keep θ and G.

    Weight decay (``weight_decay != 0``) needs a mode:

    * ``"touched"``: the :ref:`algo-rowwise` weight decay on the touched rows only, in the style
      ``decoupled_weight_decay`` says: L2 (``g'_r = g_r + wd·θ_r``, FBGEMM
      ``WeightDecayMode.L2``) or decoupled (``θ_r <- θ_r·(1 - lr_t·wd) - m_r·g_r``,
      FBGEMM ``WeightDecayMode.DECOUPLE``). Not equal to dense: untouched rows do not decay.
    * ``"lazy"``: decoupled, whatever ``decoupled_weight_decay`` says; a touched row is
      first multiplied by ``Π_{s=last+1..t}(1 - lr_s·wd)`` (which includes step t's own
      factor), then takes the :ref:`algo-rowwise` step without decay. Untouched rows decay when next
      touched or by :func:`rowwise_adagrad_sparse_flush`; afterwards the result equals
      dense decoupled :func:`rowwise_adagrad` fed the gradient with zero rows (a zero row
      adds nothing to G_r and only decays θ_r).
    * ``None`` with ``weight_decay != 0``: ``ValueError``.
    """
    if sparse_weight_decay not in SPARSE_WEIGHT_DECAY_MODES:
        raise ValueError(f"Invalid sparse_weight_decay value: {sparse_weight_decay!r}")
    if weight_decay != 0 and sparse_weight_decay is None:
        raise ValueError("weight_decay with sparse gradients needs sparse_weight_decay")
    theta = _f64(param)
    if theta.ndim == 0:
        raise ValueError("a sparse row gradient needs a parameter with at least 1 dimension")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    vals = np.asarray(values, dtype=np.float64).reshape((idx.size,) + theta.shape[1:])
    if idx.size and (idx.min() < 0 or idx.max() >= theta.shape[0]):
        raise IndexError(f"row index out of range for a table of {theta.shape[0]} rows")
    new = {"step": int(state["step"]) + 1, "sum": _f64(state["sum"]),
           "last": np.array(state["last"], np.int64), "lr_history": list(state["lr_history"])}
    t = new["step"]
    lr_t = lr_at(lr, lr_decay, t)
    new["lr_history"].append(lr_t)

    # 1. sum duplicates
    rows, pos = distinct_rows(idx)
    g = np.zeros((rows.size,) + theta.shape[1:], np.float64)
    np.add.at(g, pos, vals)

    # 2. lazy decoupled decay: catch the touched rows up to step t, step t's factor included
    lazy = sparse_weight_decay == "lazy" and weight_decay != 0
    if lazy:
        factor = _decay_factors(new["last"][rows], t, new["lr_history"], weight_decay)
        theta[rows] = theta[rows] * _per_row(factor, theta)
    new["last"][rows] = t

    # 3. the :ref:`algo-rowwise` step on the touched rows (a 1-d table as rows of width 1)
    touched_decay = weight_decay if sparse_weight_decay == "touched" else 0.0
    width = int(np.prod(theta.shape[1:]))
    sub = theta[rows].reshape(rows.size, width)
    sub_state = {"step": t - 1, "sum": new["sum"][rows]}
    sub, sub_state = rowwise_adagrad(sub, g.reshape(rows.size, width), sub_state, lr=lr,
                                     lr_decay=lr_decay, weight_decay=touched_decay, eps=eps,
                                     decoupled_weight_decay=decoupled_weight_decay,
                                     maximize=maximize)
    theta[rows] = sub.reshape(theta[rows].shape)
    new["sum"][rows] = sub_state["sum"]
    return theta, new


def rowwise_adagrad_sparse_flush(param: Any, state: State, *, weight_decay: float = 0.0,
                                 sparse_weight_decay: str | None = None
                                 ) -> tuple[np.ndarray, State]:
    """Bring every row up to the current step (:ref:`algo-sparse` ``flush()``): with
    ``sparse_weight_decay="lazy"``, ``θ_r <- θ_r·Π_{s=last+1..t}(1 - lr_s·wd)``; the other
    modes have nothing pending. Then ``last[r] = t``."""
    theta = _f64(param)
    new = {"step": int(state["step"]), "sum": _f64(state["sum"]),
           "last": np.array(state["last"], np.int64), "lr_history": list(state["lr_history"])}
    if sparse_weight_decay == "lazy":
        factor = _decay_factors(new["last"], new["step"], new["lr_history"], weight_decay)
        theta = theta * _per_row(factor, theta)
    new["last"][:] = new["step"]
    return theta, new


# --------------------------------------------------------------------------------------
# :ref:`algo-proximal` Proximal Adagrad
# --------------------------------------------------------------------------------------


def proximal_adagrad_init(param: Any, initial_accumulator_value: float = 0.1) -> State:
    """Initial state of :ref:`algo-proximal` (TF's G0 = 0.1 keeps η finite)."""
    return adagrad_init(param, initial_accumulator_value)


def proximal_adagrad(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    l1: float = 0.0,
    l2: float = 0.0,
    eps: float = 0.0,
    lr_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """One step of proximal Adagrad (TF ``ApplyProximalAdagrad``), :ref:`algo-proximal`.

    ::

        t <- t + 1 ;  lr_t = lr / (1 + (t-1)·lr_decay) ;  g <- -g if maximize
        G <- G + g² ;  η = lr_t / (sqrt(G) + ε) ;  v = θ - η·g
        θ <- sign(v)·max(|v| - η·l1, 0) / (1 + η·l2)

    ε is ours (TF has none: ε = 0 is TF's rule); it sits outside the root, as in torch
    and TF's ``ApplyAdagradV2``. With l1 = l2 = 0 this is :ref:`algo-adagrad` Adagrad with that ε outside.
    """
    theta = _f64(param)
    g = _f64(grad)
    t = int(state["step"]) + 1
    if maximize:
        g = -g
    G = _f64(state["sum"]) + g * g
    eta = lr_at(lr, lr_decay, t) / (np.sqrt(G) + eps)
    v = theta - eta * g
    theta = np.sign(v) * np.maximum(np.abs(v) - eta * l1, 0.0) / (1.0 + eta * l2)
    return theta, {"step": t, "sum": G}


def _summed_rows(indices: Any, values: Any, row_shape: tuple[int, ...]):
    """A COO row gradient as its distinct rows and each one's summed values (:ref:`algo-sparse` step 1)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    vals = np.asarray(values, dtype=np.float64).reshape((idx.size,) + row_shape)
    rows, pos = distinct_rows(idx)
    g = np.zeros((rows.size,) + row_shape, np.float64)
    np.add.at(g, pos, vals)
    return rows, g


def proximal_adagrad_sparse(
    param: Any, indices: Any, values: Any, state: State, **hyperparameters: Any
) -> tuple[np.ndarray, State]:
    """One step of :ref:`algo-proximal` with a sparse row gradient (TF ``SparseApplyProximalAdagrad``).

    Duplicates are summed first; ``t`` advances once per step, as dense; the touched rows
    get :func:`proximal_adagrad` with their summed gradient; untouched rows keep θ and G
    (TF's semantics: they are *not* shrunk, where dense would shrink them by the prox of
    a zero gradient). Keywords are :func:`proximal_adagrad`'s.
    """
    theta = _f64(param)
    rows, g = _summed_rows(indices, values, theta.shape[1:])
    G = _f64(state["sum"])
    row_state = {"step": state["step"], "sum": G[rows]}
    theta[rows], row_state = proximal_adagrad(theta[rows], g, row_state, **hyperparameters)
    G[rows] = row_state["sum"]
    return theta, {"step": row_state["step"], "sum": G}


# --------------------------------------------------------------------------------------
# :ref:`algo-dual-averaging` Adagrad dual averaging (RDA)
# --------------------------------------------------------------------------------------


def adagrad_da_init(param: Any, initial_accumulator_value: float = 0.1) -> State:
    """Initial state of :ref:`algo-dual-averaging`: ``grad_sum`` z = 0 and ``sum`` G = G0 (0.1)."""
    state = adagrad_init(param, initial_accumulator_value)
    state["grad_sum"] = np.zeros_like(state["sum"])
    return state


def adagrad_da(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    l1: float = 0.0,
    l2: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """One step of Adagrad dual averaging (TF ``ApplyAdagradDA``), :ref:`algo-dual-averaging`.

    ::

        g <- -g if maximize
        z <- z + g ;  G <- G + g² ;  T = t (after the increment)
        θ <- -sign(z)·lr·max(|z| - l1·T, 0) / (l2·T·lr + sqrt(G))    if l1 > 0
        θ <- -lr·z / (l2·T·lr + sqrt(G))                              otherwise

    θ is recomputed from the sums; the incoming ``param`` only fixes the shape.
    """
    g = _f64(grad)
    if maximize:
        g = -g
    T = int(state["step"]) + 1
    z = _f64(state["grad_sum"]) + g
    G = _f64(state["sum"]) + g * g
    theta = adagrad_da_weights(z, G, T, lr=lr, l1=l1, l2=l2).reshape(np.shape(param))
    return theta, {"step": T, "sum": G, "grad_sum": z}


def adagrad_da_weights(z: Any, G: Any, T: int, *, lr: float, l1: float = 0.0,
                       l2: float = 0.0) -> np.ndarray:
    """:ref:`algo-dual-averaging`'s θ as a closed form of the sums ``z``, ``G`` and the step ``T``."""
    z, G = _f64(z), _f64(G)
    den = l2 * T * lr + np.sqrt(G)
    if l1 > 0:
        return -np.sign(z) * lr * np.maximum(np.abs(z) - l1 * T, 0.0) / den
    return -lr * z / den


def adagrad_da_sparse(
    param: Any, indices: Any, values: Any, state: State, **hyperparameters: Any
) -> tuple[np.ndarray, State]:
    """One step of :ref:`algo-dual-averaging` with a sparse row gradient (TF ``SparseApplyAdagradDA``).

    Duplicates are summed first; ``T`` advances once per step, as dense; the touched rows
    get :func:`adagrad_da` with their summed gradient. Untouched rows keep θ, z and G: z
    and G are then those of the dense run, but θ is stale (dense recomputes it at the
    new T: see :func:`adagrad_da_weights`). Keywords are :func:`adagrad_da`'s.
    """
    theta = _f64(param)
    rows, g = _summed_rows(indices, values, theta.shape[1:])
    z, G = _f64(state["grad_sum"]), _f64(state["sum"])
    row_state = {"step": state["step"], "sum": G[rows], "grad_sum": z[rows]}
    theta[rows], row_state = adagrad_da(theta[rows], g, row_state, **hyperparameters)
    G[rows], z[rows] = row_state["sum"], row_state["grad_sum"]
    return theta, {"step": row_state["step"], "sum": G, "grad_sum": z}


# --------------------------------------------------------------------------------------
# :ref:`algo-ftrl` FTRL-Proximal
# --------------------------------------------------------------------------------------


def ftrl_init(param: Any, initial_accumulator_value: float = 0.0) -> State:
    """Initial state of :ref:`algo-ftrl`: ``z = 0`` and ``n = n₀`` (``initial_accumulator_value``, 0 in
    the paper)."""
    p = np.asarray(param, dtype=np.float64)
    return {"step": 0, "z": np.zeros(p.shape),
            "n": np.full(p.shape, float(initial_accumulator_value), np.float64)}


def ftrl(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    beta: float = 1.0,
    l1: float = 0.0,
    l2: float = 0.0,
) -> tuple[np.ndarray, State]:
    """One step of FTRL-Proximal (McMahan et al. 2013, Algorithm 1), :ref:`algo-ftrl`,
    with α = ``lr``, β = ``beta``, λ1 = ``l1``, λ2 = ``l2``.

    ::

        σ = (sqrt(n + g²) - sqrt(n)) / α ;  z <- z + g - σ·θ ;  n <- n + g²
        θ = 0                                              if |z| <= λ1
        θ = -(z - sign(z)·λ1) / ((β + sqrt(n))/α + λ2)     otherwise (n the new n)

    σ·θ uses the incoming ``param`` (the paper's w_t, the closed form of the previous z and
    n once a coordinate has had a step); the new θ depends on ``param`` only through z.
    A zero gradient gives σ = 0, so z and n stay as they are and θ is the closed form of
    them again.
    """
    theta = _f64(param)
    g = _f64(grad)
    z, n = _f64(state["z"]), _f64(state["n"])
    sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / lr
    z = z + g - sigma * theta
    n = n + g * g
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 only where |z| <= λ1
        new_theta = np.where(
            np.abs(z) <= l1, 0.0, -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / lr + l2)
        )
    return new_theta, {"step": int(state["step"]) + 1, "z": z, "n": n}


# --------------------------------------------------------------------------------------
# :ref:`algo-norm` AdaGrad-Norm
# --------------------------------------------------------------------------------------


def adagrad_norm_init(param: Any, initial_accumulator_value: float = 0.0) -> State:
    """Initial state of :ref:`algo-norm`: one scalar ``sum`` = b² (0-d)."""
    return {"step": 0, "sum": np.array(float(initial_accumulator_value))}


def adagrad_norm(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    lr_decay: float = 0.0,
    eps: float = 1e-10,
) -> tuple[np.ndarray, State]:
    """One step of AdaGrad-Norm (Ward, Wu, Bottou 2019), :ref:`algo-norm`.

    ``b² <- b² + ||g||² ;  θ <- θ - lr_t·g / (sqrt(b²) + ε)``; where ``sqrt(b²) + ε == 0``
    (then g = 0) the update is 0. For ``scope="group"`` pass the group's tensors flattened
    and concatenated (one b² for all of them). ``lr_decay`` is 0 for `adagrad.AdagradNorm`,
    which has none (lr_t = lr).
    """
    theta = _f64(param)
    g = _f64(grad)
    t = int(state["step"]) + 1
    b2 = np.array(float(state["sum"]) + float(np.sum(g * g)))
    denom = np.sqrt(b2) + eps
    if denom > 0:
        theta = theta - lr_at(lr, lr_decay, t) * g / denom
    return theta, {"step": t, "sum": b2}


# --------------------------------------------------------------------------------------
# :ref:`algo-full-matrix` Full-matrix Adagrad
# --------------------------------------------------------------------------------------


def _blocks(d: int, block_size: int | None) -> list[slice]:
    """Consecutive blocks of ``block_size`` coordinates out of d (one block without a
    block size); the last block holds what is left over."""
    size = d if block_size is None else block_size
    return [slice(start, min(start + size, d)) for start in range(0, d, max(size, 1))]


def full_matrix_adagrad_init(param: Any, block_size: int | None = None) -> State:
    """Initial state of :ref:`algo-full-matrix`: per block i of the flattened θ, ``S_i = 0`` (its size × size)
    and no ``H_i`` yet (``"h"``: the H in use, computed at the first step)."""
    d = np.asarray(param).size
    blocks = _blocks(d, block_size)
    return {"step": 0,
            "sum": [np.zeros((b.stop - b.start,) * 2) for b in blocks],
            "h": [None] * len(blocks)}


def _matrix_sqrt(S: np.ndarray) -> np.ndarray:
    """``S^{1/2}`` of a symmetric positive semi-definite S by eigendecomposition
    (eigenvalues below 0 from rounding taken as 0)."""
    w, V = np.linalg.eigh(S)
    return V @ np.diag(np.sqrt(np.maximum(w, 0.0))) @ V.T


def full_matrix_adagrad(
    param: Any,
    grad: Any,
    state: State,
    *,
    lr: float,
    eps: float = 1e-6,
    block_size: int | None = None,
    precondition_every: int = 1,
) -> tuple[np.ndarray, State]:
    """One step of full-matrix Adagrad (Duchi, Hazan, Singer 2011), :ref:`algo-full-matrix`.

    θ is flattened to d coordinates, cut into blocks of ``block_size`` consecutive
    coordinates (one block of d if None; the last block holds the rest). Per block::

        S <- S + g·gᵀ
        H  = δ·I + S^{1/2}          at steps t = 1, k+1, 2k+1, ... (k = precondition_every);
                                    in between the H of the last such step is reused
        θ <- θ - lr·H⁻¹·g           (a linear solve with H)

    ``eps`` is δ. A state ``"h"`` entry that is None (no H yet) is computed whatever t.
    """
    theta = _f64(param)
    shape = theta.shape
    theta = theta.reshape(-1)
    g = _f64(grad).reshape(-1)
    if g.shape != theta.shape:
        raise ValueError(f"grad size {g.size} does not match param size {theta.size}")
    t = int(state["step"]) + 1
    sums = [_f64(S) for S in state["sum"]]
    hs = [None if H is None else _f64(H) for H in state["h"]]
    for i, block in enumerate(_blocks(theta.size, block_size)):
        g_i = g[block]
        sums[i] = sums[i] + np.outer(g_i, g_i)
        if (t - 1) % precondition_every == 0 or hs[i] is None:
            hs[i] = eps * np.eye(g_i.size) + _matrix_sqrt(sums[i])
        theta[block] = theta[block] - lr * np.linalg.solve(hs[i], g_i)
    return theta.reshape(shape), {"step": t, "sum": sums, "h": hs}


# --------------------------------------------------------------------------------------
# :ref:`algo-dog` Learning-rate-free Adagrad (DoG-style distance in Adagrad's metric)
# --------------------------------------------------------------------------------------


def dog_adagrad_init(param: Any, reps_rel: float = 1e-4) -> State:
    """Initial state of :ref:`algo-dog` for one tensor: ``G = 0``, ``x0`` = the parameter, and the
    smallest distance ``r_ε = reps_rel·(1 + max_i |x0_i|)`` (DoG's r_ε, Ivgi, Carmon,
    Soudry 2023, with the ℓ∞ norm of x0)."""
    x0 = _f64(param).copy()
    largest = float(np.max(np.abs(x0))) if x0.size else 0.0
    return {"step": 0, "sum": np.zeros_like(x0), "initial": x0,
            "distance": reps_rel * (1.0 + largest)}


def _metric_distance(params: list[np.ndarray], states: list[State]) -> float:
    """``sqrt(Σ_i sqrt(G_i)·(x_i - x0_i)² / Σ_i sqrt(G_i))`` over every coordinate of the
    tensors: the distance from x0 in Adagrad's metric, normalised by its trace; 0 while
    every G is 0."""
    weights = [np.sqrt(_f64(s["sum"])) for s in states]
    total = sum(float(np.sum(w)) for w in weights)
    if total == 0.0:
        return 0.0
    moved = sum(float(np.sum(w * (_f64(x) - _f64(s["initial"])) ** 2))
                for w, x, s in zip(weights, params, states))
    return float(np.sqrt(moved / total))


def dog_adagrad(
    params: list[Any],
    grads: list[Any | None],
    states: list[State],
    *,
    lr: float = 1.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[list[np.ndarray], list[State]]:
    """One step of the learning-rate-free diagonal Adagrad of `adagrad.DoGAdagrad`
    (:ref:`algo-dog`), for the tensors that share one scale (a parameter group, or one
    tensor with ``scope="tensor"``). A None gradient: that tensor is not stepped (its x and
    G stay) but it still counts in the distance and takes the new r̄.

    DoG (Ivgi, Carmon, Soudry, ICML 2023) takes η_t = r̄_t = max(r_ε, max_{s≤t} ||x_s - x0||);
    here the distance is measured in diagonal Adagrad's metric, on the state before this
    step's gradient::

        d_t = sqrt( Σ_i sqrt(G_i)·(x_i - x0_i)² / Σ_i sqrt(G_i) )      (G = G_{t-1}, x = x_t)
        r̄_t = max(r̄_{t-1}, d_t)                                        (r̄_0 = max r_ε)
        g'  = ±g + wd·x ;  G ← G + g'² ;  x ← x - lr·r̄_t·g' / (sqrt(G) + ε)

    The weighting is the one that minimises Adagrad's regret bound
    Σ_i (D_i²/(2η) + η)·sqrt(G_i) over one η (Duchi, Hazan, Singer 2011).
    """
    xs = [_f64(p) for p in params]
    r = max(max(float(s["distance"]) for s in states), _metric_distance(xs, states))
    new_params, new_states = [], []
    for x, grad, state in zip(xs, grads, states):
        state = dict(state, distance=r)
        if grad is not None:
            g = -_f64(grad) if maximize else _f64(grad)
            g = g + weight_decay * x
            G = _f64(state["sum"]) + g * g
            denom = np.sqrt(G) + eps  # 0 only where g' = 0 and ε = 0: no update there
            x = x - lr * r * np.divide(g, denom, out=np.zeros_like(g), where=denom > 0)
            state.update(step=int(state["step"]) + 1, sum=G)
        new_params.append(x)
        new_states.append(state)
    return new_params, new_states
