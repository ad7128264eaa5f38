"""Energy per Transformer block, rebuilt from measured per-operation energies: an estimate.

Two different quantities carry the word "energy" in this project, and they must not be
compared directly:

* the operator runs' ``energy_per_op``: the device energy of **one scalar operation**
  (one 1×N dot product for the VMM, one product, one quotient, one softmax vector, one
  activation), Σ|V·I| of the biased terminals times the protocol's ``op_time`` (20 ms
  by default: one reading at 1 PLC), at the unit currents the protocol chose. Nothing
  else is in it: no drivers, converters, wires or data movement;
* the paper's 0.09 mJ (PCU), 0.32 mJ (memristive MAC accelerator) and 5.37 mJ (GPU):
  a **system estimate per execution of a whole Transformer block**, whose model size,
  operating speed and peripheral assumptions pcu.md does not give.

:func:`block_energy` multiplies each measured per-operation energy by how many such
operations one block needs, for block dimensions that must be stated
(:class:`BlockDims`). The result is a device-only estimate at the bench's ``op_time``;
:func:`implied_op_time` gives the operation time at which the same devices would spend
the paper's figure, which is the honest way to put the two side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: the paper's figures per execution of one Transformer block (J), as pcu.md quotes them
PAPER_BLOCK_ENERGY: dict[str, float] = {"PCU": 0.09e-3, "memristive MAC accelerator": 0.32e-3, "GPU": 5.37e-3}


@dataclass(frozen=True)
class BlockDims:
    """One Transformer encoder block: ``tokens`` (sequence length n), ``width`` (d_model),
    ``heads`` (h), ``ffn`` (the feed-forward width). The defaults are an **assumption**
    (a small vision-language encoder), not the paper's model, whose dimensions pcu.md
    does not give; ``source`` says where the numbers come from."""

    tokens: int = 64
    width: int = 256
    heads: int = 8
    ffn: int = 1024
    source: str = ("assumed (the paper's model dimensions are not in pcu.md): n = 64 tokens, d = 256, "
                   "h = 8 heads, FFN width 4·d, a small vision-language encoder block")

    def __post_init__(self) -> None:
        for name in ("tokens", "width", "heads", "ffn"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"block {name} must be a positive integer, not {getattr(self, name)!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")


@dataclass(frozen=True)
class OperationCount:
    """How many scalar operations of one operator a block needs."""

    operation: str  # what the block computes with it
    role: str  # the operator run whose per-operation energy applies
    formula: str  # the count, in the block's symbols
    count: float  # in units of the run's operation (e.g. 1×3 dot products, softmax vectors)


def operation_counts(dims: BlockDims, *, vmm_rows: int = 3, softmax_length: int = 4) -> list[OperationCount]:
    """The scalar operations of one block, in the units each operator run measures.

    Weight products (Q, K, V and output projections, the two FFN layers) run on VMM
    columns of ``vmm_rows`` cells, one run "operation" being one such dot product; the
    two activation-by-activation products (Q·Kᵀ, attention·V) on multipliers; the
    softmax over each head's n×n scores on softmax units of ``softmax_length`` elements
    (so n² h / length unit operations, which assumes the energy per element does not
    depend on the vector length); GELU on activations; the two LayerNorms' divisions on
    dividers (their sums and square roots are left out: no measured operator for them).
    """
    n, d, h, f = dims.tokens, dims.width, dims.heads, dims.ffn
    macs = 4 * n * d * d + 2 * n * d * f
    return [
        OperationCount("weight MACs: Q, K, V, output projections and the two FFN layers", "vmm",
                       f"(4·n·d² + 2·n·d·d_ff) / {vmm_rows}", macs / vmm_rows),
        OperationCount("activation products: Q·Kᵀ and attention·V", "multiplier", "2·n²·d", 2 * n * n * d),
        OperationCount("softmax of every head's score rows", "softmax", f"h·n² / {softmax_length}",
                       h * n * n / softmax_length),
        OperationCount("GELU in the FFN", "activation", "n·d_ff", n * f),
        OperationCount("LayerNorm divisions (two per block)", "divider", "2·n·d", 2 * n * d),
    ]


@dataclass(frozen=True)
class BlockEnergyRow:
    count: OperationCount
    energy_per_op: float  # J, measured (NaN: no run)
    op_time: float  # s, the run's op_time

    @property
    def energy(self) -> float:
        return self.count.count * self.energy_per_op


def block_energy(counts: list[OperationCount], per_op: Mapping[str, tuple[float, float]]) -> list[BlockEnergyRow]:
    """Each count times its measured (energy per operation J, op_time s); a role without
    a measurement gets NaN, so the total says it is incomplete."""
    return [BlockEnergyRow(c, *per_op.get(c.role, (math.nan, math.nan))) for c in counts]


def total(rows: list[BlockEnergyRow]) -> float:
    """The block's device energy (J); NaN when a role was not measured."""
    return float(sum(r.energy for r in rows))


def implied_op_time(rows: list[BlockEnergyRow], target: float) -> float:
    """The operation time (s) at which the same device power per operation (energy /
    op_time, each operator at its measured currents) would spend ``target`` J on the
    block: energy scales with the time each operation is held."""
    power_time = sum(r.count.count * r.energy_per_op / r.op_time for r in rows)
    return target / power_time if power_time > 0 else math.nan
