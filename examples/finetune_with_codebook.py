"""Hardware-aware offline fine-tuning with an operator codebook, on a toy scale.

The paper (pcu.md, "Hardware-Aware Offline Fine-Tuning") trains a network on a GPU,
runs it on perovskite computing units (PCUs), loses accuracy to the analog operators'
distortion and noise, and wins it back by fine-tuning offline with a *codebook*: every
analog operator ``y = f(x)`` becomes ``y = codebook(x) + f(x) − stopgrad(f(x))``, so
the forward pass sees what the hardware gave and the backward pass the ideal
derivative. Weights get Gaussian programming error (σ = 0.027367 in the paper).

Here the same three steps run in seconds on a 3-class spiral in 2-D with an MLP
2→32→32→3 whose two hidden activations are the codebook's ``gelu`` (else ``sigmoid``,
else ``softplus``) table:

1. train with ideal operators (plain torch functions, no noise);
2. run the same weights on "chips": codebook operators plus weight noise, averaged over
   a few reprogrammings (each a fresh draw of programming error);
3. fine-tune with the codebook operators in the forward pass and the straight-through
   gradient, then evaluate on fresh chips again; optionally the ablation without the
   bypass (``bypass=False``: the operator's output carries no gradient, so only the
   output layer learns), as the paper reports.

Input range: a table is defined on a grid in *network units*, the units in which its
ideal function is written (gelu(u) = u·sigmoid(1.702u)); physical = network·scale +
offset is the bench's business and already folded in. So a hidden pre-activation h is
the table input directly, with a fixed scale of 1 (the linear layer before it learns
any other scale), clamped to the table's valid range: the clip range intersected with
the grid. The clamp is applied in *every* phase, ideal training included, so the ideal
network never learns to rely on inputs the PCU cannot take; otherwise the codebook
would silently saturate them. The fraction of clamped pre-activations is reported.

Weight noise: w + σ·max|w|·z per layer, z ~ N(0, 1) drawn once per programming and kept
until the next (aihwkit's "add normal" modifier uses the same reference). A codebook's
σ is relative to each device's conductance range; mapping a layer's max |w| onto the
full range makes max |w| the matching reference. During fine-tuning every step is a
fresh programming, so the weights become robust to the error distribution, not to one
draw of it.

Run ``labpcu demo`` first (it writes ``labpcu-demo/codebook/codebook.h5``), then::

    python examples/finetune_with_codebook.py labpcu-demo/codebook/codebook.h5
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: activation tables to use, in order of preference
ACTIVATIONS = ("gelu", "sigmoid", "softplus")
HIDDEN = 32
CLASSES = 3
DEMO_CODEBOOK = "labpcu-demo/codebook/codebook.h5"
#: hidden layers followed by an analog activation (the output layer's softmax is digital)
ACTIVATION_LAYERS = (0, 1)


# ====================================================================== data
def make_spirals(n: int = 3000, seed: int = 0, noise: float = 0.05,
                 test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 3-arm spiral (one turn per arm) in 2-D: ``x_train, y_train, x_test, y_test``.

    One turn keeps it learnable by a 32-unit MLP in ~1,000 steps while still needing
    both hidden layers' nonlinearity; ``noise`` blurs the arms so accuracy is < 100 %
    and an operator's distortion shows up in it.
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, CLASSES, n)
    r = rng.uniform(0.1, 1.0, n)
    theta = 2 * np.pi * (r + label / CLASSES)  # one turn from centre to rim
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1) + noise * rng.standard_normal((n, 2))
    x = (2.0 * x).astype(np.float32)  # about unit spread: well inside the tables' grids
    n_test = int(round(test_fraction * n))
    return x[n_test:], label[n_test:], x[:n_test], label[:n_test]


# ====================================================================== the codebook side
def pick_activation(codebook: Any) -> Any:
    """The activation table: by name first (``gelu``, ``sigmoid``, ``softplus``), then a
    1-D table whose ideal function is one of those (names are the bench's choice)."""
    for name in ACTIVATIONS:
        t = codebook.operators.get(name)
        if t is not None and t.ndim == 1 and not t.is_transfer:
            return t
    for name in ACTIVATIONS:
        for t in codebook.operators.values():
            if t.ideal == name and t.ndim == 1 and not t.is_transfer:
                return t
    raise LookupError(f"the codebook has no {', '.join(ACTIVATIONS)} table; it has "
                      f"{', '.join(codebook.operators) or 'none'}")


def input_range(table: Any) -> tuple[float, float]:
    """Where the table is valid, in network units: its clip range within its grid
    (outside the grid the lookup would hold the edge value anyway)."""
    lo, hi = float(table.axes[0][0]), float(table.axes[0][-1])
    if table.clip.size:
        lo, hi = max(lo, float(table.clip[0][0])), min(hi, float(table.clip[0][1]))
    if not lo < hi:
        raise ValueError(f"table {table.name!r} has an empty input range [{lo}, {hi}]")
    return lo, hi


# ====================================================================== the network
def _torch() -> Any:
    import torch

    return torch


@dataclass
class Chip:
    """What executes the network: one activation per hidden layer and, for a hardware
    chip, one weight-noise module per layer. Kept apart from the weights so the same
    trained weights run on ideal operators, on a chip, or on a fresh chip."""

    activations: list[Callable[[Any], Any]]
    lo: float
    hi: float
    weight_noise: list[Any] | None = None
    #: pre-activations seen and how many were clamped (a diagnostic, not a gradient)
    seen: int = field(default=0, repr=False)
    clamped: int = field(default=0, repr=False)

    def reprogram(self) -> None:
        """A fresh chip: new programming errors and new per-device operator draws."""
        for m in [*(self.weight_noise or []), *self.activations]:
            if hasattr(m, "reprogram"):
                m.reprogram()


def make_mlp(seed: int) -> Any:
    """2→32→32→3 linear layers (the activations come from the chip)."""
    torch = _torch()
    torch.manual_seed(seed)
    return torch.nn.ModuleList([torch.nn.Linear(2, HIDDEN), torch.nn.Linear(HIDDEN, HIDDEN),
                                torch.nn.Linear(HIDDEN, CLASSES)])


def forward(layers: Any, chip: Chip, x: Any) -> Any:
    """Logits of ``layers`` run on ``chip``: noisy weights if the chip has them, each
    hidden pre-activation clamped to the table's range, then the chip's activation."""
    torch = _torch()
    for i, layer in enumerate(layers):
        w = layer.weight if chip.weight_noise is None else chip.weight_noise[i](layer.weight)
        x = torch.nn.functional.linear(x, w, layer.bias)
        if i < len(layers) - 1:
            with torch.no_grad():
                chip.seen += x.numel()
                chip.clamped += int(((x < chip.lo) | (x > chip.hi)).sum())
            x = chip.activations[i](x.clamp(chip.lo, chip.hi))
    return x


def ideal_chip(table: Any) -> Chip:
    """The table's ideal function (a plain torch function), no noise."""
    from labpcu.data.codebook_torch import torch_ideal

    f = torch_ideal(table.ideal, table.ideal_params)
    return Chip([f] * len(ACTIVATION_LAYERS), *input_range(table))


def weight_sigma(codebook: Any) -> float:
    """The codebook's weight-noise σ, or the paper's when it has none (no weight_statistics run)."""
    from labpcu.data.codebook import PAPER_WEIGHT_SIGMA

    return float(codebook.weight_noise.sigma) if codebook.weight_noise is not None else PAPER_WEIGHT_SIGMA


def codebook_chip(codebook: Any, table: Any, mode: str, seed: int, *, bypass: bool = True) -> Chip:
    """Codebook operators (one per hidden layer: two physical units) plus weight noise
    on all three layers (every layer is a crossbar)."""
    torch = _torch()
    from labpcu.data.codebook_torch import CodebookOperator, WeightNoise

    gen = torch.Generator().manual_seed(seed)
    ops = [CodebookOperator(table, mode, bypass=bypass, generator=gen) for _ in ACTIVATION_LAYERS]
    sigma = weight_sigma(codebook)
    noise = [WeightNoise(sigma, "max_abs", generator=gen) for _ in range(len(ACTIVATION_LAYERS) + 1)]
    return Chip(ops, *input_range(table), weight_noise=noise)


# ====================================================================== training and evaluation
def train(layers: Any, chip: Chip, x: Any, y: Any, *, steps: int, lr: float, seed: int,
          batch: int = 256, fresh_chip_each_step: bool = False) -> None:
    """Adam on minibatches; with ``fresh_chip_each_step`` every step is a new programming."""
    torch = _torch()
    params = [p for p in layers.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        if fresh_chip_each_step:
            chip.reprogram()
        loss = torch.nn.functional.cross_entropy(forward(layers, chip, x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def accuracy(layers: Any, chip: Chip, x: Any, y: Any, chips: int = 1) -> tuple[float, float]:
    """Mean and std of test accuracy over ``chips`` fresh programmings."""
    torch = _torch()
    accs = []
    with torch.no_grad():
        for _ in range(chips):
            chip.reprogram()
            accs.append(float((forward(layers, chip, x).argmax(dim=1) == y).float().mean()))
    return float(np.mean(accs)), float(np.std(accs))


# ====================================================================== the command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("codebook", type=Path, nargs="?", default=None,
                   help=f"codebook .h5, run store, or npz folder (e.g. {DEMO_CODEBOOK})")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and noise (default 0)")
    p.add_argument("--mode", choices=("gaussian", "quantile", "mean"), default="gaussian",
                   help="codebook lookup: mean + std·N(0,1), inverse-CDF sampling, or the mean only")
    p.add_argument("--name", default=None, help="which codebook of a run store (if it holds several)")
    p.add_argument("--ideal-steps", type=int, default=1000, help="steps of ideal training (default 1000)")
    p.add_argument("--chips", type=int, default=5, help="fresh programmings averaged per evaluation (default 5)")
    p.add_argument("--no-ablation", action="store_true", help="skip fine-tuning without the gradient bypass")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the three phases (and the ablation); print a table; return the accuracies.

    Keys: ``activation``, ``mode``, ``sigma``, ``ideal``, ``before`` / ``after`` /
    ``no_bypass`` (means over fresh chips; ``no_bypass`` is None with --no-ablation),
    ``before_std`` / ``after_std``, ``clamped`` (fraction of hidden pre-activations
    outside the table's range, on the test set with ideal operators), ``wall_time_s``.
    Exits 2 with one line when the codebook or PyTorch is missing.
    """
    args = _parser().parse_args(argv)
    if args.codebook is None:
        print(f"no codebook given: run `labpcu demo` first (it writes {DEMO_CODEBOOK}), then pass its path",
              file=sys.stderr)
        raise SystemExit(2)
    if not args.codebook.exists():
        print(f"no codebook at {args.codebook}: run `labpcu demo` first (it writes {DEMO_CODEBOOK})", file=sys.stderr)
        raise SystemExit(2)
    try:
        torch = _torch()
    except ImportError:
        print("this example needs PyTorch: pip install 'labpcu[torch]'", file=sys.stderr)
        raise SystemExit(2) from None
    # tiny tensors: one thread is fastest, and spinning threads on a shared machine are
    # many times slower than one; restored on the way out (tests call main() in-process)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args, torch)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    """The body of :func:`main`, once the codebook path and torch are known to be there."""
    from labpcu.data.codebook_io import load_codebook
    from labpcu.data.ideal import get_ideal

    wall = time.perf_counter()
    codebook = load_codebook(args.codebook, args.name)
    try:
        table = pick_activation(codebook)
    except LookupError as exc:
        print(f"{args.codebook}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    lo, hi = input_range(table)
    wn = codebook.weight_noise
    sigma = weight_sigma(codebook)
    source = f"from the codebook, measured relative to the {wn.reference}" if wn is not None else \
        "the paper's value: the codebook has none"
    params = "".join(f", {k}={v:g}" for k, v in get_ideal(table.ideal).params(table.ideal_params).items())
    print(f"codebook {args.codebook}: activation table {table.name!r} (ideal {table.ideal}{params}), "
          f"{table.grid_shape[0]} grid points, input range [{lo:g}, {hi:g}], {table.n_devices} device(s), "
          f"noise {table.noise_scope}")
    print(f"weight noise: sigma {sigma:.6g} ({source}), applied as sigma x max|w| of each layer, "
          f"drawn once per programming")

    x_tr, y_tr, x_te, y_te = make_spirals(seed=args.seed)
    x_tr, x_te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
    y_tr, y_te = torch.from_numpy(y_tr), torch.from_numpy(y_te)

    # 1. ideal operators
    layers = make_mlp(args.seed)
    ideal = ideal_chip(table)
    train(layers, ideal, x_tr, y_tr, steps=args.ideal_steps, lr=1e-2, seed=args.seed)
    ideal.seen = ideal.clamped = 0
    acc_ideal, _ = accuracy(layers, ideal, x_te, y_te)
    clamped = ideal.clamped / max(ideal.seen, 1)

    # 2. the same weights on chips
    chip = codebook_chip(codebook, table, args.mode, args.seed + 1)
    before, before_std = accuracy(layers, chip, x_te, y_te, args.chips)

    # 3. fine-tune through the codebook (straight-through gradient), evaluate on fresh chips
    tuned = copy.deepcopy(layers)
    train(tuned, chip, x_tr, y_tr, steps=args.steps, lr=3e-3, seed=args.seed + 2, fresh_chip_each_step=True)
    after, after_std = accuracy(tuned, codebook_chip(codebook, table, args.mode, args.seed + 3), x_te, y_te,
                                args.chips)

    no_bypass = None
    if not args.no_ablation:  # the operator output is detached: only the output layer learns
        ablated = copy.deepcopy(layers)
        nb_chip = codebook_chip(codebook, table, args.mode, args.seed + 4, bypass=False)
        train(ablated, nb_chip, x_tr, y_tr, steps=args.steps, lr=3e-3, seed=args.seed + 2, fresh_chip_each_step=True)
        no_bypass, _ = accuracy(ablated, codebook_chip(codebook, table, args.mode, args.seed + 3, bypass=False),
                                x_te, y_te, args.chips)
    wall = time.perf_counter() - wall

    rows = [("ideal operators", f"{100 * acc_ideal:6.2f} %", ""),
            ("codebook operators, before fine-tuning", f"{100 * before:6.2f} %", f"± {100 * before_std:.2f}"),
            (f"codebook operators, after fine-tuning ({args.steps} steps)", f"{100 * after:6.2f} %",
             f"± {100 * after_std:.2f}")]
    if no_bypass is not None:
        rows.append(("  ablation: after fine-tuning without the gradient bypass", f"{100 * no_bypass:6.2f} %", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'test accuracy (3-class spiral, ' + str(len(y_te)) + ' points)':<{width}}  {'mean':>8}  "
          f"std over {args.chips} chips")
    for name, acc, spread in rows:
        print(f"{name:<{width}}  {acc:>8}  {spread}")
    print(f"{100 * clamped:.1f} % of hidden pre-activations clamped to the table's range (ideal weights); "
          f"mode {args.mode}; wall time {wall:.1f} s")
    return {"activation": table.name, "mode": args.mode, "sigma": sigma, "ideal": acc_ideal, "before": before,
            "before_std": before_std, "after": after, "after_std": after_std, "no_bypass": no_bypass,
            "clamped": clamped, "wall_time_s": wall}


if __name__ == "__main__":
    main()
