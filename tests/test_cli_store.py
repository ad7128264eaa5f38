"""``labpcu store check|repair FILE`` through ``labpcu.cli.main``: check reports (and
changes nothing), repair fixes without losing a flushed point, both refuse bad input
with one line, repair refuses while a writer is live."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest

from labpcu.cli import main
from labpcu.data.integrity import journal_path, read_superblock
from labpcu.data.store import Store
from test_store_integrity import BLOCK, COLUMNS, N_BEFORE, assert_before_runs, crash, crashy_block, flushed_rows


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_a_clean_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "day.h5"
    rec = Store(path).begin_run("iv", COLUMNS)
    rec.append(crashy_block(0))
    rec.finish("completed")
    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 0
    assert "openable by plain h5py: yes" in out and "consistency flags: 0x00 (clear)" in out
    assert "problem" not in out and out.rstrip().endswith("clean")


def test_check_then_repair_after_a_kill_mid_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed mid-run: check (exit 1) names the flags, the plain-reader refusal and the
    dead running run, and changes no byte; repair (exit 0) clears the flags in place,
    marks the run interrupted with every flushed point; check is then clean."""
    path = tmp_path / "day.h5"
    flushed = flushed_rows(crash(path, "append", "recorder.flushed:2"))
    before_bytes = path.read_bytes()

    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 1
    assert "openable by plain h5py: no" in out and "(set)" in out
    assert "marked open for write" in out and f"run {N_BEFORE + 1:05d}-crashy is marked running" in out
    assert path.read_bytes() == before_bytes  # check is read-only

    inode = path.stat().st_ino
    code, out, _ = run_cli(capsys, "store", "repair", str(path))
    assert code == 0, out
    assert "cleared the superblock's open-for-write flags" in out and "marked run 00004-crashy interrupted" in out
    assert path.stat().st_ino == inode  # in place: no copy
    with h5py.File(path, "r") as f:  # plain reader
        grp = f["runs/00004-crashy"]
        n = int(grp.attrs["n_points"])
        assert grp.attrs["status"] == "interrupted" and n >= flushed and n == 2 * BLOCK  # killed after the 2nd flush
        assert grp["data/n"][:].tolist() == list(range(n))
    assert_before_runs(path)
    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 0 and out.rstrip().endswith("clean")


def test_repair_trims_a_column_written_ahead_of_the_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dead run whose column x holds a block the other columns lack (what a kill
    between writing one column and the next can leave once HDF5 has flushed it; made
    here with h5py): check reports the unequal lengths; repair trims to the rows every
    column holds, keeping every complete row."""
    path = tmp_path / "day.h5"
    crash(path, "append", "recorder.flushed:2")
    Store(path).runs()  # the read-side repair clears the flags; the run stays "running"
    with h5py.File(path, "a", locking=False) as f:
        x = f["runs/00004-crashy/data/x"]
        x.resize((3 * BLOCK,))
        x[2 * BLOCK:] = -1.0
    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 1 and f"columns of unequal length (x={3 * BLOCK}, n={2 * BLOCK}, s={2 * BLOCK})" in out
    code, out, _ = run_cli(capsys, "store", "repair", str(path))
    assert code == 0 and f"trimmed run 00004-crashy's columns to the {2 * BLOCK} rows" in out
    with h5py.File(path, "r") as f:
        data = f["runs/00004-crashy/data"]
        assert {name: ds.shape[0] for name, ds in data.items()} == {"x": 2 * BLOCK, "n": 2 * BLOCK, "s": 2 * BLOCK}
        assert data["n"][:].tolist() == list(range(2 * BLOCK))
        assert f["runs/00004-crashy"].attrs["status"] == "interrupted"
    assert_before_runs(path)


def test_repair_corrects_n_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "day.h5"
    rec = Store(path).begin_run("iv", COLUMNS)
    rec.append(crashy_block(0))
    rec.finish("completed")
    with h5py.File(path, "a", libver=("v110", "v110"), locking=False) as f:
        f["runs/00001-iv"].attrs["n_points"] = 99
    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 1 and f"run 00001-iv: n_points says 99, its columns hold {BLOCK}" in out
    code, out, _ = run_cli(capsys, "store", "repair", str(path))
    assert code == 0 and f"set run 00001-iv's n_points from 99 to {BLOCK}" in out
    assert Store(path).info("00001-iv").n_points == BLOCK


def test_check_and_repair_an_unfinished_write_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed while making a run (after HDF5 rewrote some metadata in place): check
    reports the journal; repair rolls it back to the state before the run began."""
    path = tmp_path / "day.h5"
    crash(path, "begin", "journal.write:5")
    assert journal_path(path).exists()
    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 1 and "unfinished write session (journal): yes" in out and "undo journal" in out
    code, out, _ = run_cli(capsys, "store", "repair", str(path))
    assert code == 0 and "rolled back an unfinished write" in out
    assert not journal_path(path).exists() and read_superblock(path).flags == 0
    assert Store(path).run_ids() == [f"{k + 1:05d}-before" for k in range(N_BEFORE)]
    assert_before_runs(path)


LIVE_WRITER = """
    import sys
    from labpcu.data.columns import Column
    from labpcu.data.store import Store
    rec = Store({path!r}).begin_run("live", [Column("x")])
    rec.append({{"x": 1.0}})
    rec.flush()
    print("ready", flush=True)
    sys.stdin.read()
    rec.finish("completed")
"""


def test_a_live_writer_is_not_a_problem_and_blocks_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While a run is written, check names the live writer and finds nothing wrong (its
    flags are expected); repair waits --wait seconds, then refuses with one line; the
    live run then completes."""
    path = tmp_path / "day.h5"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LIVE_WRITER.format(path=str(path)))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        code, out, _ = run_cli(capsys, "store", "check", str(path))
        assert code == 0 and f"live writer: process {proc.pid}" in out
        code, out, err = run_cli(capsys, "store", "repair", str(path), "--wait", "0.2")
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and f"process {proc.pid}" in err and "waited 0.2 s" in err
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert Store(path).runs()["status"].tolist() == ["completed"]


@pytest.mark.parametrize("sub", ["check", "repair"])
def test_bad_files_are_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], sub: str) -> None:
    missing = tmp_path / "none.h5"
    code, out, err = run_cli(capsys, "store", sub, str(missing))
    assert code == 2 and "no run store" in err and len(err.strip().splitlines()) == 1
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    code, out, err = run_cli(capsys, "store", sub, str(text))
    assert code == 2 and "not an HDF5 file" in err and len(err.strip().splitlines()) == 1
    assert text.read_text() == "not hdf5"
    code, out, err = run_cli(capsys, "store")
    assert code == 2 and "check or repair" in err


USERBLOCK_WRITER = """
    import os, signal, h5py, numpy as np
    f = h5py.File({path!r}, "a", libver=("v110", "v110"), locking=False)
    grp = f["runs"].create_group("00001-x")
    grp.attrs["status"] = "running"
    data = grp.create_group("data").create_dataset("x", shape=(0,), maxshape=(None,), dtype="f8", chunks=(100,))
    f.swmr_mode = True
    data.resize((5,))
    data[:] = np.arange(5.0)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_repair_copies_when_the_flags_cannot_be_cleared_in_place(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A store with a user block has its superblock at 512, not 0, where the in-place
    fix does not go: a killed SWMR writer's flags are then repaired by copying every
    object into a clean file, and the flushed points survive."""
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", libver=("v110", "v110"), userblock_size=512) as f:
        f.attrs["schema"] = "labpcu"
        f.attrs["schema_version"] = 1
        f.create_group("runs")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(USERBLOCK_WRITER.format(path=str(path)))])
    assert proc.returncode == -9
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r").close()
    code, out, _ = run_cli(capsys, "store", "check", str(path))
    assert code == 1 and "openable by plain h5py: no" in out and "run 00001-x is marked running" in out
    code, out, _ = run_cli(capsys, "store", "repair", str(path))
    assert code == 0, out
    assert "copied every object into a clean file" in out
    with h5py.File(path, "r") as f:
        assert f["runs/00001-x/data/x"][:].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert f["runs/00001-x"].attrs["status"] == "interrupted"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Opening a FIFO for reading blocks until a writer comes: check refuses it first."""
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    code, out, err = run_cli(capsys, "store", "check", str(fifo))
    assert code == 2 and "is not a regular file" in err
