"""`labpcu show RUN --csv FILE`: a PyMeasure-style commented header (procedure, run
facts, parameters with units) and unit-labelled columns that pandas reads back with
``comment="#"``, every value exact."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from labpcu import cli
from labpcu.data.columns import Column
from labpcu.data.export import read_csv
from labpcu.data.store import Store


def make_run(path):
    store = Store(path)
    rec = store.begin_run("iv_sweep", [Column("t", "s"), Column("v", "V"), Column("i", "A"),
                                       Column("n", dtype="int64"), Column("device", dtype="str")],
                          parameters={"v_start": -1.0, "v_stop": 1.5, "points": 4, "label": "a # b, c"},
                          parameter_units={"v_start": "V", "v_stop": "V"}, devices=["S01"],
                          bench={"simulated": True, "seed": 3, "name": "sim"})
    rec.append({"t": np.array([0.0, 0.1, 0.2, 0.3]), "v": np.array([-1.0, 1 / 3, math.pi, 1.5]),
                "i": np.array([1e-12, np.nan, -2.5e-7, 1.0000000000000002]), "n": np.arange(4),
                "device": np.array(["S01", "x # not a comment", 'say "hi", then', ""], dtype=object)})
    rec.finish("completed", results={"fit": {"n": 1.9}})
    return store, rec.run_id


def test_csv_round_trips_through_pandas_with_units_and_parameters(tmp_path, capsys):
    store, run_id = make_run(tmp_path / "runs.h5")
    csv = tmp_path / "run.csv"
    assert cli.main(["show", run_id, "--file", str(store.path), "--csv", str(csv)]) == 0
    capsys.readouterr()
    text = csv.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "#Procedure: <labpcu.protocols.iv_sweep>"
    assert "#Parameters:" in lines and "#Data:" in lines
    assert "#\tv_start: -1.0 V" in lines and "#\tv_stop: 1.5 V" in lines and "#\tpoints: 4" in lines
    assert f"#Run: {run_id}" in lines and "#Bench: sim (simulated, seed 3)" in lines

    df = pd.read_csv(csv, comment="#")
    assert list(df.columns) == ["t (s)", "v (V)", "i (A)", "n", "device"]
    want = store.read(run_id)
    assert len(df) == len(want) == 4
    for name, label in zip(want.columns, df.columns):
        got, exp = df[label].to_numpy(), want[name].to_numpy()
        if exp.dtype.kind == "f":
            np.testing.assert_array_equal(got, exp)  # exact, NaN included
        elif exp.dtype.kind in "iu":
            np.testing.assert_array_equal(got, exp)
        else:
            assert [("" if isinstance(v, float) and math.isnan(v) else v) for v in got] == list(exp)

    back, header = read_csv(csv)
    assert back.attrs["units"] == {"t": "s", "v": "V", "i": "A", "n": "", "device": ""}
    assert header["procedure"] == "<labpcu.protocols.iv_sweep>" and header["run"] == run_id
    assert header["parameters"]["v_start"] == "-1.0 V" and header["parameters"]["label"] == "a # b, c"
    np.testing.assert_array_equal(back["v"].to_numpy(), want["v"].to_numpy())
