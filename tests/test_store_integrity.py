"""The run store's integrity under hostile conditions (issue 11, items 7-9).

* A kill -9 at every write window of the store (deterministic: ``$LABPCU_CRASH_AT``
  names a ``crash_point`` in labpcu.data.store/recorder/integrity, and the child kills
  itself there) leaves every earlier run readable with every point and its results,
  by plain ``h5py.File(path, "r")`` after one ``Store.runs()`` call (the read-side
  repair), and the file takes the next run.
* Readers never change a writer's outcome: a 5 Hz reader process and a tight reader
  loop beside a writer of many short runs.
* Two writers at once: the second waits, or is refused with one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labpcu.data.columns import Column
from labpcu.data.integrity import journal_path, lookup3, probe_lock, read_superblock
from labpcu.data.store import Store, StoreBusyError, check_store

COLUMNS = [Column("x", "V"), Column("n", dtype="int64"), Column("s", dtype="str")]
N_BEFORE = 3
BLOCK = 4


def before_block(k: int) -> dict[str, Any]:
    """The points of the k-th complete run written before the crash."""
    return {"x": np.arange(5) * 0.25 + 10 * k, "n": np.arange(5) + 100 * k, "s": [f"r{k}p{j}" for j in range(5)]}


def before_results(k: int) -> dict[str, Any]:
    return {"k": k, "fit": {"slope": 0.5 * k, "curve": [1.0 * k, 2.0, 3.0]}, "note": f"run {k}"}


def crashy_block(j: int) -> dict[str, Any]:
    """The j-th block of the run being written when the crash comes."""
    rows = np.arange(j * BLOCK, (j + 1) * BLOCK)
    return {"x": rows * -1.5, "n": rows, "s": [f"c{r}" for r in rows]}


CHILD = """
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_store_integrity import COLUMNS, N_BEFORE, before_block, before_results, crashy_block
    from labpcu.data.store import Store

    path, phase, spec = {path!r}, {phase!r}, {spec!r}
    store = Store(path, flush_interval=600)
    if phase != "none":
        for k in range(N_BEFORE):
            rec = store.begin_run("before", COLUMNS)
            rec.append(before_block(k))
            rec.finish("completed", results=before_results(k))
    arm = lambda: os.environ.__setitem__("LABPCU_CRASH_AT", spec)
    if phase == "rewrite":
        arm()
        store.write_results("00001-before", {{"replaced": 1}})
        print("rewritten", flush=True)
    if phase in ("begin", "none"):
        arm()
    rec = store.begin_run("crashy", COLUMNS)
    if phase == "append":
        arm()
    for j in range(3):
        rec.append(crashy_block(j))
        rec.flush()
        print("flushed", rec.rows_on_disk, flush=True)
    if phase == "finish":
        arm()
    rec.finish("completed", results={{"done": 1}})
    print("finished", flush=True)
"""

READ_CHILD = """
    import os, sys
    from labpcu.data.columns import Column
    from labpcu.data.store import Store
    os.environ["LABPCU_CRASH_AT"] = {spec!r}
    store = Store({path!r})
    if {write!r}:
        rec = store.begin_run("next", [Column("y")])
        rec.finish("completed")
    else:
        store.runs()
"""

TESTS = str(Path(__file__).parent)


def run_child(code: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=TESTS)
    return proc.returncode, proc.stdout.splitlines() + [f"stderr: {line}" for line in proc.stderr.splitlines()]


def crash(path: Path, phase: str, spec: str) -> list[str]:
    """Run the writer child until it kills itself at ``spec``; its output lines."""
    code, lines = run_child(CHILD.format(tests=TESTS, path=str(path), phase=phase, spec=spec))
    assert code == -signal.SIGKILL, f"the child was not killed at {spec} (exit {code}): {lines[-5:]}"
    return lines


def read_everything(f: h5py.File) -> int:
    """Read every dataset and attribute in the file (what a plain reader would); the
    number of values read."""
    total = 0

    def visit(_name: str, obj: Any) -> None:
        nonlocal total
        for key in obj.attrs:
            obj.attrs[key]
        if isinstance(obj, h5py.Dataset):
            total += np.asarray(obj[()]).size

    for key in f.attrs:
        f.attrs[key]
    f.visititems(visit)
    return total


def assert_before_runs(path: Path, rewritten: bool = False) -> None:
    """Every run completed before the crash reads, by plain h5py and by Store, with
    every point and its results."""
    with h5py.File(path, "r") as f:  # plain: no swmr, HDF5's default locking
        assert read_everything(f) > 0
        runs = f["runs"]
        for k in range(N_BEFORE):
            grp = runs[f"{k + 1:05d}-before"]
            assert grp.attrs["status"] == "completed"
            exp = before_block(k)
            assert grp["data/x"][:].tolist() == exp["x"].tolist()
            assert grp["data/s"].asstr()[:].tolist() == exp["s"]
    store = Store(path)
    for k in range(N_BEFORE):
        run_id = f"{k + 1:05d}-before"
        info = store.info(run_id)
        assert info.status == "completed" and info.n_points == 5
        df = store.read(run_id)
        exp = before_block(k)
        assert df["x"].tolist() == exp["x"].tolist() and df["n"].tolist() == exp["n"].tolist()
        assert df["s"].tolist() == exp["s"]
        got = _plain(info.results)
        if k == 0 and rewritten:  # an interrupted re-analysis: the old results or the new, never a mix
            assert got in ({"replaced": 1}, before_results(0)), got
        else:
            assert got == before_results(k)


def _plain(value: Any) -> Any:
    """A results tree as plain Python (arrays read back as lists), to compare by value."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def flushed_rows(lines: list[str]) -> int:
    rows = [int(line.split()[1]) for line in lines if line.startswith("flushed")]
    return rows[-1] if rows else 0


def assert_crashy_run(path: Path, flushed: int, finished: bool) -> None:
    """The run the crash cut: interrupted (or completed, if its end was stored), with
    every point flushed before the crash."""
    store = Store(path)
    listing = store.runs()
    crashy = [r for r in listing.index if r.endswith("crashy")]
    if not crashy:
        assert flushed == 0
        return
    info = store.info(crashy[0])
    assert info.status == ("completed" if finished else "interrupted")
    df = store.read(crashy[0])
    assert len(df) >= flushed
    expect = np.concatenate([crashy_block(j)["x"] for j in range(3)])[:len(df)]
    assert df["x"].tolist() == expect.tolist()


def assert_takes_next_run(path: Path) -> None:
    """The file takes a new run; dead runs are then stored as interrupted; the store
    checks clean."""
    store = Store(path)
    rec = store.begin_run("after", COLUMNS)
    rec.append(crashy_block(0))
    assert rec.finish("completed") == ("completed", "")
    assert store.runs()["status"].isin(["completed", "interrupted"]).all()
    with h5py.File(path, "r") as f:
        assert all(g.attrs["status"] != "running" for g in f["runs"].values())
    report = check_store(path)
    assert report.clean, report.problems


# ------------------------------------------------------------ 7. crash windows
NAMED = [
    ("begin", "begin_run.locked"),
    ("begin", "begin_run.created"),
    ("begin", "begin_run.committed"),
    ("begin", "begin_run.opened"),
    ("begin", "begin_run.swmr"),
    ("begin", "journal.saved"),
    ("begin", "journal.before_commit"),
    ("begin", "journal.committed"),
    ("append", "recorder.write:1"),
    ("append", "recorder.flushed:1"),
    ("append", "recorder.write:3"),
    ("append", "recorder.flushed:3"),
    ("finish", "recorder.close"),
    ("finish", "finish_run.results"),
    ("finish", "finish_run.status"),
    ("finish", "journal.saved"),
    ("finish", "journal.before_commit"),
    ("finish", "journal.committed"),
    ("finish", "finish_run.committed"),
    ("rewrite", "journal.saved"),
    ("rewrite", "journal.write:3"),
    ("rewrite", "journal.before_commit"),
    ("none", "journal.write:2"),  # the very first run of a new file
]


def _crash_and_verify(tmp_path: Path, phase: str, spec: str) -> None:
    path = tmp_path / "day.h5"
    _verify_after_crash(path, phase, spec, crash(path, phase, spec))


def _verify_after_crash(path: Path, phase: str, spec: str, lines: list[str]) -> None:
    if phase == "none":  # a crash while the file itself was being made: nothing earlier to keep
        Store(path).runs() if path.exists() else None
        assert_takes_next_run(path)
        return
    Store(path).runs()  # the one read-side repair; then plain readers open the file
    sb = read_superblock(path)
    assert sb is not None and sb.flags == 0 and sb.checksum_ok and not journal_path(path).exists()
    assert_before_runs(path, rewritten=phase == "rewrite")
    finished = spec in ("finish_run.committed", "journal.committed") and phase == "finish"
    assert_crashy_run(path, flushed_rows(lines), finished)
    assert_takes_next_run(path)
    assert_before_runs(path, rewritten=phase == "rewrite")


@pytest.mark.parametrize(("phase", "spec"), NAMED, ids=[f"{p}-{s}" for p, s in NAMED])
def test_a_kill_in_any_write_window_keeps_every_earlier_run(tmp_path: Path, phase: str, spec: str) -> None:
    """A child writes three complete runs, then is killed at ``spec`` while making,
    appending to or ending a fourth (or re-analysing the first). Afterwards, after one
    ``Store.runs()``, plain h5py opens the file and reads every dataset; the earlier runs
    have every point and their results; the cut run has every flushed point; the file
    takes the next run and checks clean."""
    _crash_and_verify(tmp_path, phase, spec)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["begin", "finish", "rewrite"])
def test_a_kill_after_every_single_write_keeps_every_earlier_run(tmp_path: Path, phase: str) -> None:
    """The same, killed after the 1st, 2nd, ... write HDF5 makes in the session that
    creates a run (``begin``), stores its end (``finish``) or replaces a run's results
    (``rewrite``), until the session completes without reaching the kill: no instant
    of those sessions loses an earlier run or a flushed point."""
    from concurrent.futures import ThreadPoolExecutor

    def child(n: int) -> tuple[int, Path, int, list[str]]:
        path = tmp_path / f"day{n}.h5"
        code, lines = run_child(CHILD.format(tests=TESTS, path=str(path), phase=phase, spec=f"journal.write:{n}"))
        return n, path, code, lines

    # the children are independent processes on their own files: two at a time (the
    # machine's two cores), a batch at a time, until one completes without the kill
    n, done = 0, False
    with ThreadPoolExecutor(max_workers=2) as pool:
        while not done:
            for k, path, code, lines in pool.map(child, range(n + 1, n + 5)):
                if done:
                    continue  # past the session's last write: nothing more to check
                if code == 0:
                    done, n = True, k
                    continue
                assert code == -signal.SIGKILL, lines[-5:]
                _verify_after_crash(path, phase, f"journal.write:{k}", lines)
            if not done:
                n += 4
    assert n > 5, f"the {phase} session made only {n - 1} writes: the sweep did not reach it"




@pytest.mark.parametrize(("first", "second", "write"), [
    ("journal.write:5", "repair.rollback", False),   # killed while rolling a journal back
    ("recorder.flushed:2", "repair.flags", False),   # killed while clearing the flags
    ("recorder.flushed:2", "journal.write:3", True),  # killed while marking the dead run
    ("journal.write:5", "journal.write:1", True),     # killed in the next writer's session
])
def test_a_kill_during_the_repair_is_repaired_by_the_next_opener(tmp_path: Path, first: str, second: str,
                                                                  write: bool) -> None:
    """Repairs are idempotent: a second kill in the middle of repairing the first crash
    still leaves every earlier run readable."""
    path = tmp_path / "day.h5"
    phase = "append" if first.startswith("recorder") else "begin"
    lines = crash(path, phase, first)
    code, out = run_child(READ_CHILD.format(path=str(path), spec=second, write=write))
    assert code == -signal.SIGKILL, out
    Store(path).runs()
    assert_before_runs(path)
    assert_crashy_run(path, flushed_rows(lines), finished=False)
    assert_takes_next_run(path)


def test_lookup3_matches_the_superblocks_hdf5_writes(tmp_path: Path) -> None:
    """The checksum the flag repair writes is HDF5's own: recomputed over the
    superblocks of fresh v2 and v3 files, it matches what HDF5 stored."""
    for libver in ("v108", "v110"):
        path = tmp_path / f"{libver}.h5"
        with h5py.File(path, "w", libver=(libver, libver)) as f:
            f["x"] = np.arange(3)
        sb = read_superblock(path)
        assert sb is not None and sb.version == (2 if libver == "v108" else 3)
        n = sb.size - 4
        assert int.from_bytes(sb.raw[n:], "little") == lookup3(sb.raw[:n])
        assert sb.checksum_ok


# ------------------------------------------------------ 8. plain readers after a kill
def test_after_a_kill_plain_readers_open_the_file_after_one_labpcu_read(tmp_path: Path) -> None:
    """Killed mid-run, the file carries HDF5's "open for write" flags, and plain h5py
    refuses it; ``labpcu list runs`` clears them in place (no copy: the inode stays),
    after which plain h5py reads every dataset."""
    path = tmp_path / "day.h5"
    crash(path, "append", "recorder.flushed:2")
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r").close()
    inode = path.stat().st_ino
    from labpcu.cli import main

    assert main(["list", "runs", "--file", str(path)]) == 0
    assert path.stat().st_ino == inode
    with h5py.File(path, "r") as f:
        assert read_everything(f) > 0
        assert f["runs/00004-crashy/data/x"].shape[0] == 2 * BLOCK
    assert_before_runs(path)


# ------------------------------------------------ 9. readers never change outcomes
WRITER = """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_store_integrity import COLUMNS, crashy_block
    from labpcu.data.store import Store
    store = Store({path!r}, flush_interval=0.05, lock_timeout=30)
    for k in range({n_runs}):
        rec = store.begin_run("short", COLUMNS)
        rec.append(crashy_block(k % 3))
        rec.flush()
        status, error = rec.finish("completed", results={{"k": k, "mean": float(k) / 2}})
        assert (status, error) == ("completed", ""), (status, error)
    print("wrote", {n_runs}, flush=True)
"""

POLLER = """
    import sys, time
    from labpcu.data.store import Store
    store = Store({path!r})
    seen = set()
    stop = time.monotonic() + {seconds}
    while time.monotonic() < stop:
        try:
            seen.update(store.runs()["status"].tolist())
        except Exception as exc:  # a reader may fail to read; it must never make the writer fail
            print("read error:", exc, flush=True)
        print("seen", sorted(seen), flush=True)
        time.sleep({period})
"""


@pytest.mark.slow
@pytest.mark.parametrize("period", [0.2, 0.0], ids=["5Hz", "tight-loop"])
def test_readers_never_change_a_writers_outcome(tmp_path: Path, period: float) -> None:
    """A writer process stores 300 short runs while a reader process polls the list
    through Store (at 5 Hz, or in a tight loop) and this process reads the newest run's
    info meanwhile (the GUI case): every run is stored completed with its results, and
    no reader ever sees one ``interrupted``."""
    path = tmp_path / "day.h5"
    n_runs = 300
    Store(path).begin_run("first", COLUMNS).finish("completed")
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER.format(
        tests=TESTS, path=str(path), n_runs=n_runs))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=TESTS)
    poller = subprocess.Popen([sys.executable, "-c", textwrap.dedent(POLLER.format(
        path=str(path), seconds=120, period=period))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    own_reads = 0
    reader = Store(path)
    try:
        while writer.poll() is None:  # a third reader, in this process: each run's info
            ids = reader.run_ids()
            info = reader.info(ids[-1])
            assert info.status in ("running", "completed"), info
            own_reads += 1
            time.sleep(0.02)
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    finally:
        if writer.poll() is None:
            writer.kill()
        poller.send_signal(signal.SIGTERM)
        p_out, _ = poller.communicate(timeout=30)
    assert out.strip() == f"wrote {n_runs}"
    polls = [line for line in p_out.splitlines() if line.startswith("seen")]
    assert len(polls) >= 3 and own_reads >= 3  # the readers really read meanwhile
    assert "interrupted" not in p_out and "failed" not in p_out
    listing = Store(path).runs()
    assert len(listing) == n_runs + 1 and (listing["status"] == "completed").all(), listing["status"].value_counts()
    store = Store(path)
    for k, run_id in enumerate(listing.index[1:]):
        assert _plain(store.results(run_id)) == {"k": k, "mean": k / 2}


def test_a_reader_holding_the_file_open_does_not_block_a_writer(tmp_path: Path) -> None:
    """A reader with HDF5's default locking keeps the file open in another process (a
    GUI, HDFView): runs still begin and end, completed."""
    path = tmp_path / "day.h5"
    Store(path).begin_run("first", COLUMNS).finish("completed")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, h5py
        f = h5py.File({str(path)!r}, "r", swmr=True)
        print("open", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        store = Store(path, lock_timeout=2)
        rec = store.begin_run("while_held", COLUMNS)
        rec.append(crashy_block(0))
        assert rec.finish("completed", results={"ok": 1}) == ("completed", "")
        assert _plain(store.results(rec.run_id)) == {"ok": 1}
        assert store.runs()["status"].tolist() == ["completed", "completed"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# -------------------------------------------------------------- 9. two writers
SECOND_WRITER = """
    from labpcu.data.columns import Column
    from labpcu.data.store import Store, StoreBusyError
    try:
        rec = Store({path!r}, lock_timeout={timeout}).begin_run("second", [Column("y")])
    except StoreBusyError as exc:
        print("busy", str(exc), flush=True)
    else:
        rec.append({{"y": 2.0}})
        print("ran", rec.finish("completed")[0], flush=True)
"""


@pytest.mark.parametrize("timeout", [0.3, 30.0], ids=["refused", "waits"])
def test_a_second_writer_waits_or_is_refused_and_the_first_run_is_intact(tmp_path: Path, timeout: float) -> None:
    """While this process writes a run, a second writer process either waits for it
    (its run then follows) or, past its ``lock_timeout``, is refused with one line
    naming this process. The first run is stored completed with all its points."""
    path = tmp_path / "day.h5"
    store = Store(path)
    rec = store.begin_run("first", COLUMNS)
    rec.append(crashy_block(0))
    rec.flush()
    second = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SECOND_WRITER.format(
        path=str(path), timeout=timeout))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # the second writer is waiting (or has given up) by now
        assert probe_lock(path).pid == os.getpid()
        rec.append(crashy_block(1))
        assert rec.finish("completed") == ("completed", "")
        out, err = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err
    if timeout < 1:
        assert out.startswith("busy") and len(out.strip().splitlines()) == 1
        assert f"process {os.getpid()}" in out and "day.h5" in out
        assert Store(path).run_ids() == ["00001-first"]
    else:
        assert out.strip() == "ran completed"
        assert Store(path).run_ids() == ["00001-first", "00002-second"]
    df = Store(path).read("00001-first")
    assert df["n"].tolist() == list(range(2 * BLOCK))
    assert Store(path).info("00001-first").status == "completed"


def test_two_writers_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    """The lock is per open file, not per process: a second Store on the same file in
    the same process is refused while the first writes, then works."""
    path = tmp_path / "day.h5"
    rec = Store(path).begin_run("first", COLUMNS)
    with pytest.raises(StoreBusyError, match=f"process {os.getpid()}"):
        Store(path, lock_timeout=0.1).begin_run("second", COLUMNS)
    rec.finish("completed")
    Store(path, lock_timeout=0.1).begin_run("second", COLUMNS).finish("completed")
    assert Store(path).runs()["status"].tolist() == ["completed", "completed"]


# ------------------------------------------------------------- the journal itself
_OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 300), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), st.integers(0, 300), st.just(b"")),
    st.tuples(st.just("read"), st.integers(0, 320), st.integers(0, 80).map(lambda n: b"\0" * n)),
), max_size=25)


class _Killed(BaseException):
    """Stands for the SIGKILL: raised at a crash point, nothing after it runs."""


@settings(max_examples=150, deadline=None)
@given(initial=st.binary(max_size=200), ops=_OPS)
def test_a_journaled_session_is_all_or_nothing(tmp_path_factory: pytest.TempPathFactory, initial: bytes,
                                               ops: list[tuple[str, int, bytes]]) -> None:
    """Random writes, truncations and reads through JournaledFile behave as on a plain
    file (reads see the session's writes) and nothing reaches the file before the
    commit. A commit completes to exactly the plain file's bytes; a commit cut after
    any number of applied writes (0 = right after the journal) rolls back to the
    initial bytes."""
    from labpcu.data import integrity

    folder = tmp_path_factory.mktemp("journal")
    path = folder / "f.h5"
    n_writes = sum(kind == "write" for kind, _, _ in ops)
    killed: list[int] = []
    applied = -1
    for cut in (None, *range(n_writes + 1)):  # complete; then cut right after the journal, after 1, 2, ... writes
        path.write_bytes(initial)
        mirror = bytearray(initial)
        jf = integrity.JournaledFile(path, durable=False)
        for kind, pos, data in ops:
            if kind == "write":
                jf.seek(pos)
                jf.write(data)
                mirror.extend(bytes(max(0, pos - len(mirror))))
                mirror[pos:pos + len(data)] = data
            elif kind == "truncate":
                jf.truncate(pos)
                del mirror[pos:]
                mirror.extend(bytes(max(0, pos - len(mirror))))
            else:
                jf.seek(pos)
                buf = bytearray(len(data))
                n = jf.readinto(buf)
                assert bytes(buf[:n]) == bytes(mirror[pos:pos + len(data)])
        assert path.read_bytes() == initial  # nothing reaches the file before the commit
        if cut is None:
            applied = len(jf._writes) if jf._writes or jf._size != len(initial) else -1  # -1: nothing to commit
            jf.commit()
            assert path.read_bytes() == bytes(mirror) and not journal_path(path).exists()
            continue
        hits = {"n": 0}

        def kill(name: str) -> None:
            if name == "journal.saved" and cut == 0:
                raise _Killed
            if name == "journal.write":
                hits["n"] += 1
                if hits["n"] == cut:
                    raise _Killed

        original = integrity.crash_point
        integrity.crash_point = kill
        try:
            jf.commit()
        except _Killed:
            killed.append(cut)
            integrity.rollback(path)
            assert path.read_bytes() == initial and not journal_path(path).exists()
        else:  # fewer writes than the cut: the commit completed
            assert path.read_bytes() == bytes(mirror)
        finally:
            integrity.crash_point = original
    assert killed == list(range(applied + 1))  # every cut happened: after the journal, after each write
