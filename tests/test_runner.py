"""calpipe.runner: the one per-scan runner both orchestration modes use."""

from __future__ import annotations

import json

import pytest

from calpipe.errors import ConfigError, MetadataError, StoreError
from calpipe.runner import (
    Failure,
    ScanRun,
    ScanStatus,
    exit_code,
    failure_message,
    failure_rows,
    is_scan_fault,
    run_summary,
    write_run_outputs,
)


def _boom(exc: BaseException) -> None:
    raise exc


def test_a_calibration_error_becomes_the_scans_failure_and_skips_the_rest() -> None:
    run, ran = ScanRun(7), []
    with run:
        ran.append(run.stage("resolve", lambda: "loads"))
        run.stage("prepare", _boom, MetadataError("bad mjd", scan=7, array="source/mjd"))
        ran.append("never")
    assert ran == ["loads"]
    assert run.failure == Failure(7, "prepare", "MetadataError",
                                  "scan 7, array 'source/mjd': bad mjd")
    assert set(run.clock.timings) == {"resolve", "prepare"}
    with run:  # a failed scan runs no further stage (a later Snakemake job of the scan)
        run.stage("atmosphere", ran.append, "never")
    assert ran == ["loads"]


def test_an_unexpected_error_names_scan_and_stage() -> None:
    run = ScanRun(3)
    with run:
        run.stage("calibrate", _boom, ZeroDivisionError("division by zero"))
    assert run.failure is not None
    assert run.failure.error == "ZeroDivisionError"
    assert run.failure.message == ("scan 3, stage calibrate: unexpected ZeroDivisionError: "
                                   "division by zero")


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), ConfigError("x"),
                                 StoreError("y"), KeyboardInterrupt()])
def test_run_level_faults_propagate(exc: BaseException) -> None:
    assert not is_scan_fault(exc)
    run = ScanRun(1)
    with pytest.raises(type(exc)), run:
        run.stage("write", _boom, exc)
    assert run.failure is None


def test_unknown_stage_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown stage"), ScanRun(1) as run:
        run.stage("typo", lambda: None)


@pytest.mark.parametrize(("ok", "failed", "code"), [(3, 0, 0), (2, 1, 2), (0, 2, 1), (0, 0, 1)])
def test_exit_code(ok: int, failed: int, code: int) -> None:
    assert exit_code(ok, failed) == code


def test_messages() -> None:
    assert failure_message(0, 0) == "no science scans to calibrate"
    assert failure_message(1, 4) == "1 of 4 scans failed, see failures.json"
    assert failure_message(0, 4) == "all 4 scans calibrated"


def test_summary_and_failures_files(tmp_path) -> None:
    fail = ScanStatus(scan=9, ok=False, failure=Failure(9, "load", "L0FormatError", "m"),
                      session="s")
    good = ScanStatus(scan=2, ok=True, mode="tp", pwv_mm=1.0, median_t_sys_k=150.0,
                      timings_s={"load": 0.5}, session="s", l0_bytes_read=100)
    summary = run_summary([fail, good], orchestration="in-process", input_store="a",
                          output_store="b", config_digest="d", wall_seconds=1.0)
    assert (summary["n_scans"], summary["n_failed"], summary["exit_code"]) == (2, 1, 2)
    assert [s["scan"] for s in summary["scans"]] == [2, 9]
    assert summary["l0_bytes_read_total"] == 100
    write_run_outputs(tmp_path, [fail, good], summary)
    assert json.loads((tmp_path / "failures.json").read_text()) == [
        {"scan": 9, "stage": "load", "error": "L0FormatError", "message": "m"}]
    assert failure_rows([fail], with_session=True)[0]["session"] == "s"
    assert ScanStatus.from_dict(good.to_dict()) == good
    assert ScanStatus.from_dict(fail.to_dict()) == fail
