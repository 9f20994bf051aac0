"""What every figure of the report shares: the `Plot` record, one colour per optimizer, and
saving a figure (matplotlib's object API, Agg canvas, PNG, no pyplot state)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from adagrad.experiments.optimizers import REGISTRY

_PALETTE = ("#1f77b4", "#17becf", "#9467bd", "#2ca02c", "#bcbd22", "#8c564b", "#e377c2",
            "#7f7f7f", "#d62728", "#ff7f0e", "#000000")
COLORS = {spec.key: _PALETTE[i % len(_PALETTE)] for i, spec in enumerate(REGISTRY)}
DPI = 110


@dataclass(frozen=True)
class Plot:
    """A PNG written into the report folder and the caption shown under it."""

    file: str
    title: str
    caption: str
    dataset: str | None
    claims: tuple[str, ...] = ()  # the claims whose evidence this plot shows


def color(key: str) -> str:
    """The optimizer's colour in every figure."""
    return COLORS.get(key, "#333333")


def save(fig: Figure, folder: Path, name: str, legend_rows: int = 0) -> str:
    """Lay out (leaving ``legend_rows`` rows at the bottom for a figure legend) and save."""
    height = fig.get_size_inches()[1]
    bottom = min((0.22 * legend_rows + 0.15) / height, 0.45) if legend_rows else 0.0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(folder / name, dpi=DPI)
    return name
