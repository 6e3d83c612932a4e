"""The command-line contract (issue 12, item 7) and the run-level faults of the in-process mode:
one-line errors with exit 1, a validated --scans, "no science scans", a closed stdout, --json,
verbosity after the command, the umask, disk full while writing, a dead prefetch thread."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from calpipe import cli, l1, pipeline
from calpipe.testing import analytic_table, make_session

CALPIPE = str(Path(sys.executable).parent / "calpipe")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from calpipe.atmosphere.tableio import save_table

    base = tmp_path_factory.mktemp("cli")
    save_table(analytic_table(), base / "table.npz")
    return make_session(base / "s.zarr", table=analytic_table())


def _calpipe(*args: str, cwd: Path | None = None, shell_tail: str = ""
             ) -> subprocess.CompletedProcess[str]:
    if shell_tail:  # e.g. "| head -c 10": the exit code of calpipe itself (pipefail)
        cmd = " ".join([CALPIPE, *map(str, args)]) + " " + shell_tail
        return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True,
                              text=True, cwd=cwd, timeout=300)
    return subprocess.run([CALPIPE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _table(session: Path) -> str:
    return str(session.parent / "table.npz")


@pytest.mark.parametrize("args", [["calibrate", "x.zarr", "y.zarr", "--mode", "bogus"],
                                  ["calibrate", "x.zarr"], ["calibrat"],
                                  ["calibrate", "x.zarr", "y.zarr", "--typo"]])
def test_bad_arguments_one_line_exit_1(args: list[str]) -> None:
    proc = _calpipe(*args)
    assert proc.returncode == 1, proc
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("calpipe") and "error" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["abc", "10-5", "1001,", "1001-x", "-5"])
def test_scans_validated(session: Path, tmp_path: Path, text: str) -> None:
    proc = _calpipe("calibrate", session, tmp_path / "o.zarr", f"--scans={text}")
    assert proc.returncode == 1, proc
    assert "--scans" in proc.stderr and "Traceback" not in proc.stderr


def test_parse_scans() -> None:
    assert cli._parse_scans("1001,1003-1005") == [1001, 1003, 1004, 1005]
    assert cli._parse_scans(None) is None


def test_no_science_scans(session: Path, tmp_path: Path) -> None:
    store = shutil.copytree(session, tmp_path / "loads-only.zarr")
    for p in store.glob("scan_*"):
        if (p / "source").is_dir():
            shutil.rmtree(p)
    proc = _calpipe("calibrate", store, tmp_path / "o.zarr", "--atmosphere-table",
                    _table(session))
    assert proc.returncode == 1, proc
    assert "no science scans" in proc.stdout + proc.stderr


def test_json_only_json_closed_stdout_verbosity_umask(session: Path, tmp_path: Path) -> None:
    proc = _calpipe("calibrate", session, tmp_path / "a.zarr", "--json", "-v",
                    "--atmosphere-table", _table(session))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # nothing but the JSON line on stdout
    assert result["exit_code"] == 0 and result["failed"] == []
    # a reader that closes stdout at once does not turn success into failure
    proc = _calpipe("calibrate", session, tmp_path / "b.zarr", "--atmosphere-table",
                    _table(session), shell_tail="| head -c 1 > /dev/null")
    assert proc.returncode == 0, proc.stderr
    # files meant for others honour the umask (mkstemp alone makes them 0600)
    old = os.umask(0o022)
    try:
        proc = _calpipe("calibrate", session, tmp_path / "c.zarr", "-q",
                        "--atmosphere-table", _table(session))
    finally:
        os.umask(old)
    assert proc.returncode == 0
    for name in ("failures.json", "run_summary.json"):
        mode = stat.S_IMODE((tmp_path / "c.zarr" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_other_options_refused_then_overwrite(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    assert _calpipe("calibrate", session, out, "-q", "--atmosphere-table",
                    _table(session)).returncode == 0
    proc = _calpipe("calibrate", session, out, "-q", "--pwv", "1.2", "--atmosphere-table",
                    _table(session))
    assert proc.returncode == 1 and "--overwrite" in proc.stderr, proc.stderr
    proc = _calpipe("calibrate", session, out, "-q", "--pwv", "1.2", "--overwrite",
                    "--atmosphere-table", _table(session))
    assert proc.returncode == 0, proc.stderr


def test_disk_full_one_line_no_partial_group(session: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = l1._write_group

    def full(path, tmp_name, result, extra):  # type: ignore[no-untyped-def]
        real(path, tmp_name, result, extra)  # the group is (almost) there ...
        raise OSError(errno.ENOSPC, "No space left on device", str(path / tmp_name))

    monkeypatch.setattr(l1, "_write_group", full)
    out = tmp_path / "o.zarr"
    code = cli.main(["-q", "calibrate", str(session), str(out), "--atmosphere-table",
                     _table(session)])
    err = capsys.readouterr().err
    assert code == 1
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        ln for ln in err.splitlines() if ln.startswith("calpipe: error: No space left")]
    assert not list(out.glob(".partial-*"))
    assert l1.list_scans(out) == []


def test_dead_prefetch_thread_fails_the_run(session: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    class Boom(BaseException):
        pass

    def broken_mark(*_args: object) -> None:
        raise Boom("the loader's bookkeeping failed")

    real = pipeline.LoadedScan

    def dying(scan: int) -> object:
        if scan != 1001:
            broken_mark()
        return real(scan)

    monkeypatch.setattr(pipeline, "LoadedScan", dying)
    with pytest.raises(RuntimeError, match="prefetch thread died"):
        pipeline.calibrate_store(session, tmp_path / "o.zarr",
                                 pipeline.CalibrationConfig(atmosphere_table=_table(session)))
