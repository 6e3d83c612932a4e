"""The command-line contract (issue 12, item 7) and the run-level faults of the in-process mode:
one-line errors with exit 1, a validated --scans, "no science scans", a closed stdout, --json,
verbosity after the command, the umask, disk full while writing, a dead prefetch thread."""

from __future__ import annotations

import argparse
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


def _all_parsers(parser: argparse.ArgumentParser, prefix: str = "calpipe"
                 ) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _all_parsers(sub, f"{prefix} {name}")
    return out


def test_every_option_of_every_command_has_help() -> None:
    """Issue 15: help texts for every option and argument of every subcommand (and of
    ``calpipe atm-table build``, whose parser is the builder's own)."""
    import argparse

    from calpipe.atmosphere import am_builder

    parsers = _all_parsers(cli.build_parser())
    names = {name for name, _ in parsers}
    assert {"calpipe simulate", "calpipe calibrate", "calpipe manifest", "calpipe run",
            "calpipe import sdfits", "calpipe export", "calpipe report"} <= names
    captured: dict[str, argparse.ArgumentParser] = {}
    orig = argparse.ArgumentParser.parse_args

    def grab(self: argparse.ArgumentParser, *a: object, **k: object) -> object:
        captured["p"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[assignment,method-assign]
    try:
        with pytest.raises(SystemExit):
            am_builder.main(["x.npz"])
    finally:
        argparse.ArgumentParser.parse_args = orig  # type: ignore[method-assign]
    build = captured["p"]
    parsers.append(("calpipe atm-table build", build))
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, p in parsers for a in p._actions
               if not isinstance(a, argparse._SubParsersAction)
               and (a.help is None or not str(a.help).strip())]
    assert missing == []
    # defaults are said: every optional option with a non-trivial default names it
    sim = dict(parsers)["calpipe simulate"]
    assert "[2048]" in sim.format_help() and "[12]" in sim.format_help()


def test_manifest_store_is_relative_to_where_the_user_stands(
        session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``calpipe manifest u/small.zarr -d u/wf`` reads u/small.zarr from the current
    directory, not u/wf/u/small.zarr (issue 15)."""
    from calpipe.workflow.paths import manifest_path

    (tmp_path / "u" / "wf").mkdir(parents=True)
    shutil.copytree(session, tmp_path / "u" / "small.zarr")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "manifest", "u/small.zarr", "-d", "u/wf", "--session", "s1"]) == 0
    manifest = json.loads((tmp_path / "u" / "wf" / manifest_path("s1")).read_text())
    assert manifest["store"] == str((tmp_path / "u" / "small.zarr").resolve())
    assert "from " + str((tmp_path / "u" / "small.zarr").resolve()) in capsys.readouterr().out
    # a store that exists only relative to -d is not found
    shutil.copytree(session, tmp_path / "u" / "wf" / "only.zarr")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "manifest", "only.zarr", "-d", "u/wf"]) == 1


def test_atm_table_build_shows_progress_with_an_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``calpipe atm-table build`` draws a progress bar (runs done / total, elapsed,
    remaining) on stderr without -v; -q silences it."""
    import numpy as np

    from calpipe.atmosphere import am_builder

    calls: list[float] = []

    def fake(job: tuple[str, float, float, float, float]) -> tuple[np.ndarray, ...]:
        calls.append(job[4])
        f = np.array([220.0, 220.5, 221.0])
        return f, 0.01 * job[4] * np.ones(3), 250.0 * np.ones(3)

    monkeypatch.setattr(am_builder, "_node_job", fake)
    args = ["atm-table", "build", str(tmp_path / "t.npz"), "--fmin", "220", "--fmax", "221",
            "--step", "500", "--pwv-nodes", "3", "--pressures", "500,600", "--workers", "1"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert len(calls) == 6 and (tmp_path / "t.npz").exists()
    assert "am runs" in err and "6/6" in err and "remaining" in err
    assert cli.main(["-q", *args[:2], str(tmp_path / "u.npz"), *args[3:]]) == 0
    assert capsys.readouterr().err == ""


def test_ctrl_c_on_calpipe_run_leaves_no_lock(session: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the workflow
    runs: calpipe run waits for Snakemake's clean-up, no lock stays, and a rerun completes."""
    import signal
    import time

    import yaml

    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copytree(session, wd / "s.zarr")
    (wd / "config.yaml").write_text(yaml.safe_dump(
        {"stores": {"s": "s.zarr"}, "report": False,
         "calibration": {"atmosphere_table": _table(session)}}))
    proc = subprocess.Popen([CALPIPE, "run", "--directory", str(wd), "--configfile",
                             str(wd / "config.yaml"), "--cores", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((wd / "results").glob("*/work/*/*.json")):
        time.sleep(0.2)  # the first stage record: jobs are running
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert not list((wd / ".snakemake" / "locks").glob("*")), err[-2000:]
    assert "Traceback" not in out + err.replace("KeyboardInterrupt", ""), err[-3000:]
    rerun = _calpipe("run", "--directory", str(wd), "--configfile", str(wd / "config.yaml"),
                     "--cores", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "all 4 scans calibrated" in rerun.stdout
