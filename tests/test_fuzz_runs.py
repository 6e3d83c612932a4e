"""Whole-run fuzzing (issue 12): random single-file corruptions of one science scan.

Classes of root cause rather than a table of imagined faults: any file of the scan's source
group (metadata JSON or chunk), any damage (bytes flipped, truncated, emptied, deleted,
replaced by a directory, a FIFO or a link out of the store, JSON fields of the wrong type or
shape). For every case the in-process run must not raise or hang, and every other scan's L1
must be bit-identical to a clean run; the damaged scan is either calibrated or recorded in
failures.json. One Snakemake run over a session with a damaged scan per case class checks
the same for the workflow. Seeds are fixed: a failure names its case and reproduces.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from calpipe import l1
from calpipe.atmosphere.tableio import save_table
from calpipe.pipeline import calibrate_store
from calpipe.testing import analytic_table, assert_l1_equal, make_session, run_snakemake
from calpipe.workflow import calibration_config

SCIENCE = [1001, 1002, 1004, 1005, 1007, 1008]
N_CASES = int(os.environ.get("CALPIPE_FUZZ_CASES", "24"))
IGNORE = ("utc", "input_store")  # the runs read copies of the clean store
KINDS = ("flip", "truncate", "empty", "delete", "directory", "fifo", "outside_link",
         "json_dtype", "json_shape", "json_attribute", "json_garbage")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    save_table(analytic_table(), base / "table.npz")
    store = make_session(base / "clean.zarr", table=analytic_table(), n_scans=9, load_every=3)
    out = base / "clean-l1.zarr"
    result = calibrate_store(store, out, _config(base))
    assert result.exit_code == 0
    return {"base": base, "store": store, "l1": out}


def _config(base: Path):  # type: ignore[no-untyped-def]
    return calibration_config({"atmosphere_table": str(base / "table.npz")})


def corrupt(store: Path, scan: int, kind: str, rng: random.Random) -> str:
    """Damage one file of ``scan``'s source group; returns a description of the case."""
    src = store / f"scan_{scan:06d}" / "source"
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if kind.startswith("json"):
        files = [p for p in files if p.name in ("zarr.json", ".zarray", ".zattrs")]
    target = rng.choice(files)
    rel = target.relative_to(store)
    if kind == "flip":
        data = bytearray(target.read_bytes())
        for _ in range(rng.randint(1, 16)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    elif kind == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: rng.randrange(max(len(data), 1))])
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "delete":
        target.unlink()
    elif kind == "directory":
        target.unlink()
        target.mkdir()
    elif kind == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif kind == "outside_link":
        outside = store.parent / f"outside-{rng.randrange(10**6)}"
        outside.write_bytes(target.read_bytes())
        target.unlink()
        target.symlink_to(outside)
    elif kind == "json_garbage":
        target.write_text(target.read_text()[: rng.randrange(1, 40)] + "}{")
    else:
        meta = json.loads(target.read_text())
        if kind == "json_dtype" and "data_type" in meta:
            meta["data_type"] = rng.choice(["int8", "float32", "bool", "uint64", "string"])
        elif kind == "json_dtype" and "dtype" in meta:
            meta["dtype"] = rng.choice(["|i1", "<f4", "|b1", "<u8"])
        elif kind == "json_shape" and "shape" in meta:
            shape = list(meta["shape"])
            if shape:
                shape[rng.randrange(len(shape))] = rng.choice([0, 1, 2**40, 7])
            meta["shape"] = shape
        else:
            attrs = meta.setdefault("attributes", {})
            attrs[rng.choice(["gs_xs", "units", "f_eff", "scan_number"])] = rng.choice(
                [True, "text", [1, 2], {"a": 1}, None, 1e308])
        target.write_text(json.dumps(meta))
    return f"{kind} {rel}"


def _run_with_timeout(store: Path, out: Path, config, seconds: float = 120):  # type: ignore[no-untyped-def]
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = calibrate_store(store, out, config)
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the run hangs"
    if "error" in box:
        raise AssertionError(f"the run raised {box['error']!r}") from box["error"]  # type: ignore[misc]
    return box["result"]


@pytest.mark.parametrize("case", range(N_CASES))
def test_one_damaged_scan_costs_no_other(clean: dict[str, Path], tmp_path: Path,
                                         case: int) -> None:
    rng = random.Random(1000 + case)
    kind = KINDS[case % len(KINDS)]
    scan = rng.choice(SCIENCE)
    store = shutil.copytree(clean["store"], tmp_path / "s.zarr", symlinks=True)
    what = corrupt(store, scan, kind, rng)
    out = tmp_path / "l1.zarr"
    result = _run_with_timeout(store, out, _config(clean["base"]))
    others = [s for s in SCIENCE if s != scan]
    calibrated = [s.scan for s in result.successes]
    assert set(others) <= set(calibrated), (what, result.failures)
    failed = [f.scan for f in result.failures]
    assert failed in ([], [scan]), (what, failed)
    assert result.exit_code == (2 if failed else 0), what
    rows = json.loads((out / "failures.json").read_text())
    assert [r["scan"] for r in rows] == failed, what
    # every other scan exactly as in the clean run
    keep = sorted(set(l1.list_scans(out)) - {scan})
    assert keep == others, what
    scratch = tmp_path / "others.zarr"
    shutil.copytree(out, scratch)
    if scan in l1.list_scans(scratch):
        l1.remove_scan_group(scratch, scan)
    reference = tmp_path / "reference.zarr"
    shutil.copytree(clean["l1"], reference)
    l1.remove_scan_group(reference, scan)
    assert_l1_equal(scratch, reference, others, provenance_ignore=IGNORE)


def test_workflow_with_damaged_scans(clean: dict[str, Path], tmp_path: Path) -> None:
    """The workflow on a session with one damaged scan per class: every damaged scan fails or
    calibrates on its own, the good one is as in the clean run, the run ends with a summary."""
    store = shutil.copytree(clean["store"], tmp_path / "s.zarr", symlinks=True)
    rng = random.Random(7)
    damaged = {}
    for scan, kind in zip(SCIENCE[:-1], ("flip", "json_dtype", "fifo", "outside_link",
                                         "json_shape"), strict=True):
        damaged[scan] = corrupt(store, scan, kind, rng)
    save_table(analytic_table(), tmp_path / "table.npz")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"stores": {"s": "s.zarr"}, "report": False,
         "calibration": {"atmosphere_table": str(clean["base"] / "table.npz")}}))
    run_snakemake(tmp_path, "--cores", "2", timeout=600)
    out = tmp_path / "results" / "s" / "l1.zarr"
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["n_scans"] == len(SCIENCE), summary
    assert SCIENCE[-1] in l1.list_scans(out)
    rows = json.loads((out / "failures.json").read_text())
    assert {r["scan"] for r in rows} <= set(damaged), (rows, damaged)
    reference = tmp_path / "reference.zarr"
    shutil.copytree(clean["l1"], reference)
    scratch = tmp_path / "scratch.zarr"
    shutil.copytree(out, scratch)
    for scan in damaged:
        l1.remove_scan_group(reference, scan)
        l1.remove_scan_group(scratch, scan)
    assert_l1_equal(scratch, reference, [SCIENCE[-1]], provenance_ignore=IGNORE)
