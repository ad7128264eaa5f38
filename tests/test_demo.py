"""`labpcu demo` end to end on the simulated bench."""

from __future__ import annotations

import json
import subprocess
import sys


from labpcu.cli import main


def test_demo_meets_every_band_and_writes_a_summary(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["bench_time_s"] > 1000 + 3 * 600  # retention ran on bench time
    names = [f["name"] for f in summary["figures"]]
    assert len(names) == 6 and all(f["passed"] for f in summary["figures"])
    assert "pass" in capsys.readouterr().out


def test_demo_with_another_seed(tmp_path):
    out = subprocess.run([sys.executable, "-m", "labpcu.cli", "demo", "--seed", "2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_seed_is_a_one_line_usage_error(capsys):
    assert main(["demo", "--seed", "minus-one"]) == 2
    err = capsys.readouterr().err
    assert "seed must be a whole number" in err and len(err.strip().splitlines()) == 1
