"""``labpcu codebook build|export|show`` through ``labpcu.cli.main``: what each writes
and prints, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from labpcu.cli import main
from labpcu.data.codebook_io import list_codebooks, load_codebook
from labpcu.data.store import Store
from test_codebook import make_operator_store


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "runs.h5"
    return path, make_operator_store(path)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def bad(capsys: pytest.CaptureFixture, *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labpcu: error: "), err
    return lines[0]


def test_build_export_show(capsys, store, tmp_path) -> None:
    path, ids = store
    code, out, _ = run(capsys, "codebook", "build", str(path), "--name", "bench1")
    assert code == 0
    assert "4 operator(s) (multiplier, sigmoid, softmax, softplus)" in out and "/codebooks/bench1" in out
    assert "weight noise sigma" in out
    assert list_codebooks(path) == ["bench1"]
    assert len(Store(path).run_ids()) == 7  # the store still reads, runs untouched

    code, out, _ = run(capsys, "codebook", "export", str(path), "--name", "bench1", "--out", str(tmp_path / "x.h5"))
    assert code == 0 and (tmp_path / "x.h5").is_file()
    code, out, _ = run(capsys, "codebook", "export", str(path), "--name", "bench1", "--out", str(tmp_path / "out"),
                       "--format", "both")
    assert code == 0
    assert (tmp_path / "out" / "bench1.h5").is_file() and (tmp_path / "out" / "bench1" / "manifest.json").is_file()
    code, _, _ = run(capsys, "codebook", "export", str(path), "--name", "bench1", "--out", str(tmp_path / "npz"),
                     "--format", "npz")
    assert code == 0 and json.loads((tmp_path / "npz" / "manifest.json").read_text())["schema"] == "labpcu-codebook"
    stored = load_codebook(path, "bench1")
    for loaded in (load_codebook(tmp_path / "x.h5"), load_codebook(tmp_path / "out" / "bench1"),
                   load_codebook(tmp_path / "npz")):
        assert loaded.equals(stored)

    for target in (tmp_path / "x.h5", tmp_path / "npz", tmp_path / "npz" / "manifest.json", path):
        code, out, _ = run(capsys, "codebook", "show", str(target))
        assert code == 0
        lines = out.splitlines()
        header = next(ln for ln in lines if ln.startswith("operator"))
        assert "kind" in header and "mean |y-ideal|" in header and "mean rel. error" in header
        row = next(ln for ln in lines if ln.startswith("multiplier"))
        assert row.split()[:6] == ["multiplier", "elementwise2d", "multiply", "5x3", "2", "3"]
        assert row.endswith("%")
        assert any(ln.startswith("softmax ") and " vector " in ln for ln in lines)
        assert "weight noise: sigma" in out


def test_build_with_run_numbers(capsys, store) -> None:
    path, ids = store
    number = str(int(ids["multiplier"].split("-")[0]))
    code, out, _ = run(capsys, "codebook", "build", str(path), number, ids["activation"])
    assert code == 0 and "(multiplier, sigmoid, softplus)" in out
    assert list_codebooks(path) == ["default"]
    assert load_codebook(path).weight_noise is None


def test_bad_input_is_one_line_exit_2(capsys, store, tmp_path) -> None:
    path, ids = store
    assert "no run store" in bad(capsys, "codebook", "build", str(tmp_path / "missing.h5"))
    assert "no run '42'" in bad(capsys, "codebook", "build", str(path), "42")
    assert "not an operator run" in bad(capsys, "codebook", "build", str(path), ids["iv"])
    assert "aborted, not completed" in bad(capsys, "codebook", "build", str(path), ids["aborted"])
    assert "no results['codebook']" in bad(capsys, "codebook", "build", str(path), ids["no_codebook"])
    assert "codebook name" in bad(capsys, "codebook", "build", str(path), "--name", "a/b")
    assert "no codebook 'nope'" in bad(capsys, "codebook", "export", str(path), "--name", "nope", "--out",
                                       str(tmp_path / "o"))
    assert "holds 0 codebooks" in bad(capsys, "codebook", "show", str(path))
    assert "no codebook at" in bad(capsys, "codebook", "show", str(tmp_path / "none.h5"))
    assert "the following arguments are required: --out" in bad(capsys, "codebook", "export", str(path))
    assert "invalid choice: 'zip'" in bad(capsys, "codebook", "export", str(path), "--out", "x", "--format", "zip")
    assert "codebook needs a command" in bad(capsys, "codebook")
    not_store = tmp_path / "plain.h5"
    with h5py.File(not_store, "w"):
        pass
    assert "not a labpcu run store" in bad(capsys, "codebook", "build", str(not_store))
    assert main(["codebook", "build", str(path)]) == 0
    capsys.readouterr()
    assert "give a folder" in bad(capsys, "codebook", "export", str(path), "--out", str(tmp_path / "a.h5"),
                                  "--format", "both")


def test_importing_the_cli_module_stays_light() -> None:
    code = ("import sys, labpcu.cli_codebook; "
            "heavy = [m for m in ('numpy', 'h5py', 'pandas', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
