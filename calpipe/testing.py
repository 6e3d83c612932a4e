"""Builders shared by the tests (and usable by downstream projects): small synthetic sessions,
a fast analytic atmosphere table, and fault injectors that break a valid session in one way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.atmosphere.table import AtmosphereTable
from calpipe.simulate import SimulationConfig, simulate_session


def analytic_table(t_atm: bool = True) -> AtmosphereTable:
    """A smooth, cheap atmosphere table (80-1200 GHz, 150-800 hPa) for fast unit tests.

    tau = (P / 550 hPa) [c(nu) + b(nu) pwv + 0.01 b(nu) pwv^2], with b, c rising with frequency
    and a water line near 557 GHz; t_atm = 255 K + 3 K ln(pwv). Not a model of any site.
    """
    f = np.linspace(80e9, 1200e9, 1121)
    ghz = f / 1e9
    b = 0.02 * (ghz / 230.0) ** 2 + 2.0 * np.exp(-0.5 * ((ghz - 557.0) / 8.0) ** 2)
    c = 0.01 + 0.02 * (ghz / 500.0) ** 2
    pwv = np.geomspace(0.02, 12.0, 18)
    p = np.array([150.0, 300.0, 550.0, 800.0])
    tau = (p[:, None, None] / 550.0) * (c[None, None, :] + b[None, None, :] * pwv[None, :, None]
                                        + 0.01 * b[None, None, :] * pwv[None, :, None] ** 2)
    tatm = None
    if t_atm:
        tatm = np.broadcast_to(255.0 + 3.0 * np.log(pwv)[None, :, None], tau.shape).copy()
    return AtmosphereTable(f, pwv, p, tau, tatm, "analytic-test", {"purpose": "tests"})


def analytic_sky_table(windows_ghz: tuple[tuple[float, float], ...] = ((80.0, 1200.0),)
                       ) -> Any:
    """A cheap :class:`~calpipe.atmosphere.skytable.SkyTable` for tests (not a site model).

    tau = (P / 550) [c + b pwv + 0.01 b pwv^2] (1 + 0.002 (T_g - 270)) as in
    :func:`analytic_table`; T_atm = 255 + 3 ln pwv + 4 ln A + 0.8 (T_g - 270) K: linear in ln A
    and T_g, so interpolation between nodes is exact.
    """
    from calpipe.atmosphere.skytable import SkyTable

    f = np.concatenate([np.linspace(lo * 1e9, hi * 1e9, max(int((hi - lo) * 4) + 1, 2))
                        for lo, hi in windows_ghz])
    ghz = f / 1e9
    b = 0.02 * (ghz / 230.0) ** 2 + 2.0 * np.exp(-0.5 * ((ghz - 557.0) / 8.0) ** 2)
    c = 0.01 + 0.02 * (ghz / 500.0) ** 2
    pwv = np.geomspace(0.02, 12.0, 14)
    p = np.array([450.0, 650.0])
    tg = np.array([240.0, 270.0, 300.0])
    am = np.array([1.0, 1.6, 2.6, 4.0, 6.0])
    base = c[None, :] + b[None, :] * pwv[:, None] + 0.01 * b[None, :] * pwv[:, None] ** 2
    tau = ((p[:, None, None, None] / 550.0) * (1 + 0.002 * (tg[None, :, None, None] - 270.0))
           * base[None, None])
    tatm = (255.0 + 3.0 * np.log(pwv)[None, None, None, :, None]
            + 4.0 * np.log(am)[None, None, :, None, None]
            + 0.8 * (tg[None, :, None, None, None] - 270.0))
    tatm = np.broadcast_to(tatm, (p.size, tg.size, am.size, pwv.size, f.size)).copy()
    windows = np.array([[lo * 1e9, hi * 1e9] for lo, hi in windows_ghz])
    return SkyTable(f, windows, pwv, p, tg, am, tau, tatm, "analytic-sky-test",
                    {"purpose": "tests"})


def small_config(**changes: Any) -> SimulationConfig:
    """A session small enough for unit tests (a fraction of a second to simulate)."""
    base = SimulationConfig(n_scans=6, load_every=3, n_channels=256, n_dumps=4, n_receivers=2,
                            n_arrays=2, line_width_channels=6.0)
    return replace(base, **changes)


def make_session(path: str | Path, table: AtmosphereTable | None = None,
                 **changes: Any) -> Path:
    """Simulate a small session at ``path`` with the analytic table; returns the path."""
    path = Path(path)
    simulate_session(path, small_config(**changes), table=table or analytic_table(),
                     overwrite=True)
    return path


# -- fault injection: break a valid session in one way ----------------------------------------
# Each breaker takes the store path, the scan number and the array path inside the scan group
# (e.g. "source/mjd", "calibration/data_5d"), changes exactly that, and returns nothing (or
# the files it touched). They work on Zarr v3 and v2 stores; copy the session first
# (``copy_session``) when the pristine one is shared between tests.

_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


def copy_session(src: str | Path, dst: str | Path) -> Path:
    """Copy a session store (a directory) to ``dst`` and return ``dst``."""
    import shutil

    dst = Path(dst)
    shutil.copytree(src, dst)
    return dst


def _scan_group(store: str | Path, scan: int) -> Any:
    import zarr

    from calpipe.l0 import scan_group_name

    return zarr.open_group(str(store), mode="r+", path=scan_group_name(scan))


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.strip("/").rpartition("/")
    return parent, name


def delete_array(store: str | Path, scan: int, path: str) -> None:
    """Remove the array (or group) ``path`` of scan ``scan``, e.g. ``"source/mjd"``."""
    group = _scan_group(store, scan)
    del group[path.strip("/")]


def replace_array(store: str | Path, scan: int, path: str, values: Any,
                  dtype: Any = None) -> None:
    """Overwrite array ``path`` of scan ``scan`` with ``values`` (any shape and dtype).

    ``dtype`` defaults to the dtype of ``values``; strings (numpy ``U``/``O``) are stored as
    a zarr string array. The array need not exist before.
    """
    parent, name = _split(path)
    group = _scan_group(store, scan)
    if parent:
        group = group[parent]
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        arr = group.create_array(name, shape=values.shape, dtype=str, overwrite=True)
        arr[...] = values.astype(object)
        return
    dtype = np.dtype(dtype or values.dtype)
    arr = group.create_array(name, shape=values.shape, dtype=dtype, overwrite=True)
    arr[...] = values.astype(dtype)


def read_array(store: str | Path, scan: int, path: str) -> np.ndarray:
    """The stored values of array ``path`` of scan ``scan``, as zarr returns them."""
    import zarr

    from calpipe.l0 import scan_group_name

    arr = zarr.open_array(str(Path(store) / scan_group_name(scan) / path.strip("/")), mode="r")
    return np.asarray(arr[...])


def array_dir(store: str | Path, scan: int, path: str) -> Path:
    """Directory of array (or group) ``path`` of scan ``scan`` in a local store."""
    from calpipe.l0 import scan_group_name

    return Path(store) / scan_group_name(scan) / path.strip("/")


def chunk_files(store: str | Path, scan: int, path: str) -> list[Path]:
    """The chunk files of an array, sorted: ``c/...`` (v3 default keys) or ``0.0...`` (v2)."""
    adir = array_dir(store, scan, path)
    if (adir / "c").is_dir():
        return sorted(p for p in (adir / "c").rglob("*") if p.is_file())
    return sorted(p for p in adir.iterdir() if p.is_file() and p.name not in _METADATA_FILES)


def truncate_chunk(store: str | Path, scan: int, path: str, index: int = 0,
                   keep: float = 0.5) -> Path:
    """Cut chunk file number ``index`` (see ``chunk_files``) to ``keep`` of its size."""
    chunk = chunk_files(store, scan, path)[index]
    data = chunk.read_bytes()
    chunk.write_bytes(data[: int(len(data) * keep)])
    return chunk


def delete_chunk(store: str | Path, scan: int, path: str, index: int = 0) -> Path:
    """Delete chunk file number ``index`` (see ``chunk_files``) of an array."""
    chunk = chunk_files(store, scan, path)[index]
    chunk.unlink()
    return chunk


def corrupt_metadata(store: str | Path, scan: int | None = None, path: str = "",
                     text: str = "{ this is not JSON") -> Path:
    """Overwrite the zarr metadata file of the store root (``scan=None``), a scan group
    (``path=""``) or an array/group inside a scan with ``text``; returns the file.
    """
    from calpipe.l0 import scan_group_name

    node = Path(store)
    if scan is not None:
        node = node / scan_group_name(scan) / path.strip("/")
    for name in ("zarr.json", ".zarray", ".zgroup"):
        meta = node / name
        if meta.exists():
            meta.write_text(text)
            return meta
    raise FileNotFoundError(f"no zarr metadata file in {node}")


def add_group(store: str | Path, name: str) -> None:
    """Create an (empty) group ``name`` at the store root, e.g. ``"notes"`` or ``"scan_12a"``."""
    import zarr

    zarr.open_group(str(store), mode="r+").create_group(name)


def write_synthetic_manifest(workdir: str | Path, n: int, session: str = "big") -> Path:
    """A workflow manifest of ``n`` scans (and their stamps) for a store that does not exist,
    plus a config.yaml that uses it as is: measures Snakemake's DAG alone (dry runs)."""
    import json

    import yaml

    from calpipe import workflow as cw

    wd = Path(workdir)
    scans = [cw.scan_id(100000 + i) for i in range(n)]
    stamps = wd / "results" / session / "stamps"
    stamps.mkdir(parents=True)
    for sid in scans:
        (stamps / f"{sid}.json").write_text(json.dumps({"scan": int(sid)}))
    store = f"/nonexistent/{session}.zarr"
    manifest = {"format": cw.MANIFEST_FORMAT, "version": 1, "session": session,
                "store": store, "stamp_mode": "stat", "scans": scans,
                "calibration_only": [], "ignored_groups": []}
    (wd / "results" / session / "manifest.json").write_text(json.dumps(manifest))
    config = wd / "config.yaml"
    config.write_text(yaml.safe_dump({"stores": {session: store},
                                      "manifest": {"refresh": False}}))
    return config


# -- shared assertions and runners of the mode tests ------------------------------------------

#: run_summary.json keys that may differ between an in-process and a Snakemake run
MODE_DEPENDENT_SUMMARY_KEYS = ("orchestration", "utc", "wall_seconds", "input_store",
                               "output_store", "stage_seconds_total", "l0_bytes_read_total")


def comparable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A run summary without what may differ between the modes (and per-scan timings)."""
    out = {k: v for k, v in summary.items() if k not in MODE_DEPENDENT_SUMMARY_KEYS}
    out["scans"] = [{k: v for k, v in s.items() if k not in ("timings_s", "l0_bytes_read")}
                    for s in summary.get("scans", [])]
    return out


def assert_l1_equal(a: str | Path, b: str | Path, scans: list[int] | None = None, *,
                    provenance_ignore: tuple[str, ...] = ("utc",)) -> None:
    """Two L1 stores hold the same scans, every array identical (NaN == NaN), the same
    attributes but timings, and the same provenance but its time (and ``provenance_ignore``,
    e.g. ``input_store`` when the inputs are copies)."""
    import numpy as np
    import zarr

    from calpipe import l1

    a, b = Path(a), Path(b)
    assert l1.list_scans(a) == l1.list_scans(b), (l1.list_scans(a), l1.list_scans(b))
    if scans is not None:
        assert l1.list_scans(a) == list(scans)
    for scan in l1.list_scans(a):
        ga: Any = zarr.open_group(str(a / f"scan_{scan:06d}"), mode="r")
        gb: Any = zarr.open_group(str(b / f"scan_{scan:06d}"), mode="r")
        assert sorted(ga.array_keys()) == sorted(gb.array_keys())
        for name in ga.array_keys():
            x, y = ga[name][...], gb[name][...]
            assert x.dtype == y.dtype and x.shape == y.shape, (scan, name)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (scan, name)
        attrs_a = {k: v for k, v in ga.attrs.items() if k not in ("timings_s", "provenance")}
        attrs_b = {k: v for k, v in gb.attrs.items() if k not in ("timings_s", "provenance")}
        differ = sorted(k for k in set(attrs_a) | set(attrs_b) if attrs_a.get(k) != attrs_b.get(k))
        assert not differ, (scan, differ)
        pa = {k: v for k, v in dict(ga.attrs["provenance"]).items()
              if k not in provenance_ignore}
        pb = {k: v for k, v in dict(gb.attrs["provenance"]).items()
              if k not in provenance_ignore}
        differ = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
        assert not differ, (scan, "provenance", differ)


def snakemake_command(workdir: str | Path, *args: str) -> list[str]:
    """The real ``snakemake`` of this environment on the repository's workflow, with the
    default profile, in ``workdir`` (config: ``workdir/config.yaml``)."""
    import sys

    repo = Path(__file__).resolve().parents[1]
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe), "--snakefile", str(repo / "workflow" / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(Path(workdir) / "config.yaml"),
            "--workflow-profile", str(repo / "profiles" / "default"), *args]


def run_snakemake(workdir: str | Path, *args: str, check: bool = True,
                  timeout: float = 600) -> Any:
    """Run :func:`snakemake_command`; raise with its output tail when it fails and ``check``."""
    import subprocess

    proc = subprocess.run(snakemake_command(workdir, *args), cwd=workdir, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def metadata_file(store: str | Path, scan: int, path: str) -> Path:
    """The zarr metadata file (zarr.json, or .zarray / .zgroup for v2) of a node of a scan."""
    node = array_dir(store, scan, path)
    for name in ("zarr.json", ".zarray", ".zgroup"):
        if (node / name).exists():
            return node / name
    raise FileNotFoundError(f"no zarr metadata file in {node}")


def edit_metadata(store: str | Path, scan: int, path: str, edit: Any) -> Path:
    """Apply ``edit(meta: dict) -> None`` to the parsed JSON metadata of a node of a scan
    (``path`` "" for the scan group) and write it back; returns the file."""
    import json

    meta_path = metadata_file(store, scan, path)
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    return meta_path


def chunk_shape_key(meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Where a metadata dict keeps the chunk shape: (container, key), for v3 and v2."""
    if meta.get("zarr_format") == 2:
        return meta, "chunks"
    return meta["chunk_grid"]["configuration"], "chunk_shape"


# -- the stage chain of a session, in memory (tests that check physics, not orchestration) ----

@dataclass(frozen=True)
class ScanStages:
    """Every stage product of one scan, computed in memory by :func:`run_stages`."""

    scan: int
    data: Any  # l0.ScanData
    load: Any  # CalibrationLoadFull
    prepared: Any  # PreparedData
    atm: Any  # AtmosphereResult
    result: Any  # CalibrationResult (None with calibrate=False)


def run_stages(path: str | Path, config: Any, table: Any = None, *,
               calibrate: bool = True) -> list[ScanStages]:
    """resolve -> prepare -> atmosphere (-> calibrate, then ``check()``) for every science scan
    of an L0 store, with the stage functions both orchestration modes call; the next
    calibration snapshot is read when the configuration asks for it (gain_interpolate,
    calibration_select). ``table``: the atmosphere table (default: the analytic test table)."""
    from calpipe import stages
    from calpipe.l0 import open_session
    from calpipe.pipeline import load_next_calibration

    table = analytic_table() if table is None else table
    session = open_session(path)
    out = []
    for n in session.source_scans():
        data = session.load_scan(n)
        cal = session.load_calibration(n, data.meta.lloadsn)
        load = stages.resolve(data, cal, config,
                              load_next_calibration(session, n, cal.scan, config))
        prepared = stages.prepare(data, config)
        atm = stages.atmosphere(stages.ScanGeometry.of(data), load, prepared, config, table)
        result = None
        if calibrate:
            result = stages.calibrate(data, load, prepared, atm, config)
            result.check()
        out.append(ScanStages(n, data, load, prepared, atm, result))
    return out


def calibrate_both_modes(workdir: str | Path, section: dict[str, Any],
                         store: str = "s.zarr") -> tuple[Path, Path]:
    """One session through both orchestration modes with one configuration: writes
    ``workdir/config.yaml`` (session ``s``, no report), runs ``calibrate_store`` from
    ``workdir`` (relative paths as the workflow sees them, so the same configuration digest)
    into ``workdir/inprocess.zarr`` and the real ``snakemake --cores 2``. Returns both L1
    stores (in-process, workflow)."""
    import os

    import yaml

    from calpipe.pipeline import calibrate_store
    from calpipe.workflow import calibration_config

    workdir = Path(workdir)
    (workdir / "config.yaml").write_text(yaml.safe_dump(
        {"stores": {"s": store}, "report": False, "calibration": dict(section)}))
    inproc = workdir / "inprocess.zarr"
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        calibrate_store(store, inproc, calibration_config(section))
    finally:
        os.chdir(cwd)
    run_snakemake(workdir, "--cores", "2")
    return inproc, workdir / "results" / "s" / "l1.zarr"
