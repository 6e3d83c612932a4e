"""The two orchestration modes agree by construction (issue 11): on a session with broken scans
of several kinds, the in-process run and the Snakemake workflow write the same L1 arrays, the
same failures.json and the same run_summary.json (but what is mode-dependent: timings, paths,
orchestration), and a rerun after scans start failing leaves the same store in both modes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from faults import inject

from calpipe import l1
from calpipe.atmosphere.tableio import save_table
from calpipe.pipeline import calibrate_store
from calpipe.testing import (
    analytic_table,
    assert_l1_equal,
    calibrate_both_modes,
    comparable_summary,
    make_session,
    run_snakemake,
)
from calpipe.workflow import calibration_config

#: one fault per kind of stage: load (metadata, chunk of an ON subscan), resolve, prepare,
#: atmosphere-free all-fill (prepare), and one scan that stays good
FAULTS = {1001: "missing_off", 1002: "metadata_nan", 1004: "truncated_chunk",
          1005: "all_fill", 1007: "hot_not_above_cold"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("modes")
    save_table(analytic_table(), wd / "table.npz")
    make_session(wd / "s.zarr", table=analytic_table(), n_scans=9, load_every=3)
    config = {"stores": {"s": "s.zarr"}, "report": False,
              "calibration": {"atmosphere_table": "table.npz"}}
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    return wd


def _both(wd: Path) -> tuple[Path, Path]:
    """Both modes on one store with one configuration (calpipe.testing)."""
    return calibrate_both_modes(wd, {"atmosphere_table": "table.npz"})


def _read(path: Path) -> object:
    return json.loads(path.read_text())


def test_modes_agree_on_a_rerun_with_broken_scans(workspace: Path) -> None:
    wd = workspace
    inproc, workflow = _both(wd)  # clean: every science scan calibrated in both
    assert l1.list_scans(inproc) == l1.list_scans(workflow) == [1001, 1002, 1004, 1005, 1007,
                                                                1008]
    assert_l1_equal(inproc, workflow)

    applied = {}
    for scan, name in FAULTS.items():
        try:
            inject(wd / "s.zarr", scan, name)
            applied[scan] = name
        except ValueError:  # an injector that needs the scan's own loads
            continue
    assert len(applied) >= 4, applied
    inproc, workflow = _both(wd)

    # the failed scans' groups of the clean run are gone in both stores
    good = sorted({1001, 1002, 1004, 1005, 1007, 1008} - set(applied))
    assert_l1_equal(inproc, workflow, good)
    fail_in, fail_wf = _read(inproc / "failures.json"), _read(workflow / "failures.json")
    assert fail_in == fail_wf
    assert [row["scan"] for row in fail_in] == sorted(applied)  # type: ignore[index]
    sum_in, sum_wf = _read(inproc / "run_summary.json"), _read(workflow / "run_summary.json")
    assert comparable_summary(sum_in) == comparable_summary(sum_wf)  # type: ignore[arg-type]
    assert sum_in["orchestration"] == "in-process"  # type: ignore[index]
    assert sum_wf["orchestration"] == "snakemake"  # type: ignore[index]
    assert sum_in["exit_code"] == 2  # type: ignore[index]


def test_output_describes_the_latest_run(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Other options are refused (--overwrite / --add say how); groups of scans that left the
    input are removed, in both modes."""
    import shutil

    from calpipe.errors import StoreError

    save_table(analytic_table(), tmp_path / "table.npz")
    store = make_session(tmp_path / "s.zarr", table=analytic_table())
    monkeypatch.chdir(tmp_path)
    config = calibration_config({"atmosphere_table": "table.npz"})
    out = tmp_path / "inprocess.zarr"
    calibrate_store(store, out, config)
    other = config.replace(pwv_fixed_mm=1.2)
    with pytest.raises(StoreError, match="--overwrite"):
        calibrate_store(store, out, other, scans=[1001])
    calibrate_store(store, out, other, scans=[1001], existing="add")
    assert l1.list_scans(out) == [1001, 1002, 1004, 1005]

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"stores": {"s": "s.zarr"}, "report": False,
         "calibration": {"atmosphere_table": "table.npz"}}))
    run_snakemake(tmp_path, "--cores", "2")
    workflow = tmp_path / "results" / "s" / "l1.zarr"
    assert l1.list_scans(workflow) == [1001, 1002, 1004, 1005]

    shutil.rmtree(store / "scan_001005")  # the scan leaves the input
    result = calibrate_store(store, out, config, existing="overwrite")
    run_snakemake(tmp_path, "--cores", "2")
    assert l1.list_scans(out) == l1.list_scans(workflow) == [1001, 1002, 1004]
    assert "scan_001005" in result.summary["removed_groups"]
    assert "scan_001005" in _read(workflow / "run_summary.json")["removed_groups"]  # type: ignore[index]
    assert_l1_equal(out, workflow)
