"""The conventions users port Adagrad from (:ref:`algo-conventions`).

Frameworks disagree on where ε sits, how large it is, what the accumulator starts at and
how weight decay enters. A convention names one such choice; arguments given explicitly
win over it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adagrad.optim.validation import check_choice


@dataclass(frozen=True)
class Convention:
    eps: float
    eps_placement: str
    initial_accumulator_value: float
    decoupled_weight_decay: bool


CONVENTIONS: dict[str, Convention] = {
    # torch.optim.Adagrad, the default.
    "torch": Convention(eps=1e-10, eps_placement="outside", initial_accumulator_value=0.0,
                        decoupled_weight_decay=False),
    # optax.adagrad: the textbook formula, ε inside the root.
    "optax": Convention(eps=1e-7, eps_placement="inside", initial_accumulator_value=0.1,
                        decoupled_weight_decay=False),
    # keras.optimizers.Adagrad (Keras 3): decoupled decay θ -= θ·wd·lr.
    "keras": Convention(eps=1e-7, eps_placement="inside", initial_accumulator_value=0.1,
                        decoupled_weight_decay=True),
    # tf.raw_ops.ApplyAdagradV2.
    "tensorflow": Convention(eps=1e-7, eps_placement="outside", initial_accumulator_value=0.1,
                             decoupled_weight_decay=False),
    # FBGEMM / TorchRec table-batched embeddings, EXACT_ADAGRAD.
    "fbgemm": Convention(eps=1e-8, eps_placement="outside", initial_accumulator_value=0.0,
                         decoupled_weight_decay=False),
}


def resolve(convention: str | None, **given: object) -> dict[str, object]:
    """The convention's values, overridden by those ``given`` that are not None."""
    name = "torch" if convention is None else convention
    check_choice("convention", name, CONVENTIONS)
    values = asdict(CONVENTIONS[name])
    values.update({key: value for key, value in given.items() if value is not None})
    return values
