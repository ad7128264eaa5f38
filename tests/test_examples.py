"""examples/finetune_with_codebook.py on a synthetic, deliberately distorted codebook:
ideal training works, the distortion costs accuracy, fine-tuning through the codebook
wins most of it back (and beats fine-tuning without the gradient bypass); a missing
codebook is one line and exit code 2."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from labpcu.data.codebook import PAPER_WEIGHT_SIGMA, Codebook, OperatorTable, WeightNoise, build_table  # noqa: E402
from labpcu.data.codebook_io import export_codebook  # noqa: E402
from labpcu.data.ideal import get_ideal  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_with_codebook.py"
GRID = np.linspace(-3.0, 3.0, 25)
DEVICES = ("U01", "U02", "U03", "U04")
REPEATS = 4


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("finetune_with_codebook", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def distorted_table(name: str = "gelu", ideal: str = "gelu", seed: int = 0) -> OperatorTable:
    """A measured-looking activation that is clearly not the ideal one: a gain that
    grows with x (1 + 0.25·tanh x), an offset of 0.2, a 5 % gain spread between
    devices, and read noise; every device measured on a fixed grid with repeats."""
    rng = np.random.default_rng(seed)
    per_device = len(GRID) * REPEATS
    x = np.tile(np.repeat(GRID, REPEATS), len(DEVICES))
    device = np.repeat(DEVICES, per_device)
    repeat = np.tile(np.arange(REPEATS), len(GRID) * len(DEVICES))
    gain = 1.0 + 0.25 * np.tanh(x) + np.repeat(rng.normal(0.0, 0.05, len(DEVICES)), per_device)
    y = get_ideal(ideal)(x) * gain + 0.2 + 0.05 * rng.standard_normal(len(x))
    spec = {"kind": "elementwise1d", "ideal": ideal, "inputs": ["x"], "grid": {"x": GRID}}
    return build_table(name, spec, x, y, device, repeat)


def test_fine_tuning_recovers_what_the_codebook_costs(example: ModuleType, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (path,) = export_codebook(Codebook({"gelu": distorted_table()}, weight_noise=WeightNoise()), tmp_path / "cb.h5")
    threads = torch.get_num_threads()
    r = example.main([str(path), "--steps", "200", "--chips", "3", "--seed", "0"])
    assert torch.get_num_threads() == threads  # main() leaves the process as it found it
    assert r["activation"] == "gelu" and r["sigma"] == PAPER_WEIGHT_SIGMA
    assert r["ideal"] > 0.9
    assert r["before"] < r["ideal"] - 0.1  # the distortion shows
    assert r["after"] > r["before"]
    assert r["after"] - r["before"] > 0.5 * (r["ideal"] - r["before"])  # most of the loss recovered
    assert r["after"] > r["no_bypass"]  # the paper's ablation: the bypass matters
    out = capsys.readouterr().out
    for label in ("ideal operators", "before fine-tuning", "after fine-tuning", "without the gradient bypass",
                  "wall time"):
        assert label in out


def test_missing_codebook_is_one_line_and_exit_2(example: ModuleType, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        example.main([str(tmp_path / "nowhere.h5")])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert len(lines) == 1 and "labpcu demo" in lines[0]


def test_no_codebook_argument_is_the_hint_not_an_argparse_error(example: ModuleType,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        example.main([])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert len(lines) == 1 and "labpcu demo" in lines[0] and "usage:" not in lines[0]


def test_activation_choice_and_input_range(example: ModuleType) -> None:
    sig = distorted_table("sigmoid", "sigmoid")
    gelu = distorted_table("my_gelu", "gelu")
    assert example.pick_activation(Codebook({"sigmoid": sig, "my_gelu": gelu})) is sig  # by name first
    assert example.pick_activation(Codebook({"my_gelu": gelu})) is gelu  # then by ideal function
    with pytest.raises(LookupError, match="no gelu, sigmoid, softplus table"):
        example.pick_activation(Codebook({"exp": distorted_table("exp", "exp")}))
    assert example.input_range(gelu) == (-3.0, 3.0)
    gelu.clip = np.array([[-2.5, 4.0]])  # the clip range, within the grid
    assert example.input_range(gelu) == (-2.5, 3.0)
