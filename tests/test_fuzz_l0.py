"""Property test (issue 12): a random single-array corruption of a valid store never makes the
reader or a stage raise anything but a CalibrationError subclass, never hangs, and a scan that
still calibrates has finite output (``CalibrationResult.check`` and
``physics.calibrate.check_usable``).

One small synthetic store (``calpipe.testing.make_session``: 1000 load scan, 1001 with its own
loads, 1002 and 1003 on the loads of 1000) is corrupted in place, one node at a time, and
restored after each example. Corruption classes: dtype, shape, chunk bytes, JSON metadata,
attributes, file type (FIFO, directory, links in and out of the store, deleted files) and
values (NaN, inf, zero, negative, huge).

Deterministic by default (``derandomize``: the same examples in every ``make test``, bounded
time); ``CALPIPE_FUZZ_EXAMPLES=2000 CALPIPE_FUZZ_RANDOM=1`` explores further.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from calpipe.config import CalibrationConfig  # noqa: E402
from calpipe.errors import CalibrationError  # noqa: E402
from calpipe.l0 import METADATA_FILES, open_session, scan_group_name  # noqa: E402
from calpipe.physics.calibrate import check_usable  # noqa: E402
from calpipe.stages import ScanGeometry, atmosphere, calibrate, prepare, resolve  # noqa: E402
from calpipe.testing import analytic_table, make_session, replace_array  # noqa: E402

EXAMPLES = int(os.environ.get("CALPIPE_FUZZ_EXAMPLES", "100"))
RANDOM = os.environ.get("CALPIPE_FUZZ_RANDOM", "") not in ("", "0")
TIMEOUT = 20.0  # seconds for one scan's read + stages: a hang fails the example
CONFIG = CalibrationConfig()
SCANS = (1001, 1002, 1003)
#: (scan group, node) pairs a corruption may hit; the scans calibrated afterwards depend on it
GROUPS = {1000: ("calibration",), 1001: ("source", "calibration"), 1002: ("source",)}
ATTRIBUTES = ("gs_xs", "gi_xi", "f_eff", "rest_freq_hz", "instmode", "scan_number", "source",
              "line", "telescope", "date_obs")
JUNK_VALUES: list[Any] = [True, False, None, "", "0.5", "abc", -1, 0, 1, 2, 0.5, 1e-300,
                          1e300, -0.5, 10**40, [0.5], {"a": 1}, "NaN", [], {}]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_session(tmp_path_factory.mktemp("fuzz") / "s.zarr", table=analytic_table(),
                        n_scans=4, load_every=4, n_channels=64, n_dumps=2, n_receivers=1,
                        n_arrays=2, fill_fraction=0.1, dead_channels=2, own_calibration=(0,),
                        freq_off_hz=2.5e6)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the store holding a plausible chunk file."""
    d = tmp_path_factory.mktemp("outside")
    (d / "foreign.bin").write_bytes(np.arange(4096, dtype=np.int32).tobytes())
    return d


def arrays_of(store: Path) -> list[tuple[int, str]]:
    found = []
    for scan, subs in GROUPS.items():
        for sub in subs:
            gdir = store / scan_group_name(scan) / sub
            found += [(scan, f"{sub}/{p.name}") for p in sorted(gdir.iterdir()) if p.is_dir()]
    return found


# -- corruption kinds: each returns a description; all change ONE node ----------------------

@dataclass
class Ctx:
    store: Path
    outside: Path
    scan: int
    path: str  # "" for the scan group itself, else "source/mjd", ...
    data: st.DataObject

    @property
    def node(self) -> Path:
        return self.store / scan_group_name(self.scan) / self.path

    def meta_file(self) -> Path:
        for name in ("zarr.json", ".zarray", ".zgroup"):
            if (self.node / name).exists():
                return self.node / name
        raise FileNotFoundError(self.node)

    def chunk_files(self) -> list[Path]:
        return sorted(p for p in self.node.rglob("*") if p.is_file()
                      and p.name not in METADATA_FILES)

    def values(self) -> np.ndarray:
        return np.asarray(zarr.open_array(str(self.node), mode="r")[...])

    def draw(self, strategy: st.SearchStrategy[Any], label: str) -> Any:
        return self.data.draw(strategy, label=label)


def k_dtype(c: Ctx) -> str:
    values = c.values()
    dtype = c.draw(st.sampled_from(["int8", "uint16", "int64", "float16", "float32", "bool",
                                    "complex64", "str", "uint64"]), "dtype")
    if dtype == "str":
        new = np.array([str(v) for v in values.ravel().tolist()], dtype=object)
        replace_array(c.store, c.scan, c.path, new.reshape(values.shape))
    else:
        with np.errstate(all="ignore"):
            replace_array(c.store, c.scan, c.path, values.astype(dtype) if values.dtype.kind
                          in "iufb" else np.zeros(values.shape, dtype))
    return f"dtype -> {dtype}"


def k_shape(c: Ctx) -> str:
    values = c.values()
    how = c.draw(st.sampled_from(["drop_last", "add_axis", "scalar", "empty", "transpose",
                                  "repeat"]), "shape")
    if how == "drop_last" and values.ndim:
        ax = c.draw(st.integers(0, values.ndim - 1), "axis")
        new = np.take(values, range(max(values.shape[ax] - 1, 0)), axis=ax)
    elif how == "add_axis":
        new = values[None]
    elif how == "scalar":
        new = np.asarray(values.ravel()[0] if values.size else 0)
    elif how == "empty":
        new = values.ravel()[:0]
    elif how == "transpose":
        new = values.T.copy()
    else:
        new = np.concatenate([values, values], axis=-1) if values.ndim else values
    if new.dtype.kind in "OUT":
        new = new.astype(object)
    replace_array(c.store, c.scan, c.path, new)
    return f"shape {values.shape} -> {new.shape} ({how})"


def k_chunk_bytes(c: Ctx) -> str:
    files = c.chunk_files()
    if not files:
        return "no chunk file"
    f = files[c.draw(st.integers(0, len(files) - 1), "chunk")]
    raw = f.read_bytes()
    how = c.draw(st.sampled_from(["truncate", "flip", "append", "random", "empty", "zeros"]),
                 "bytes")
    if how == "truncate":
        new = raw[: c.draw(st.integers(0, max(len(raw) - 1, 0)), "keep")]
    elif how == "flip" and raw:
        pos = c.draw(st.integers(0, len(raw) - 1), "pos")
        new = raw[:pos] + bytes([raw[pos] ^ c.draw(st.integers(1, 255), "xor")]) + raw[pos + 1:]
    elif how == "append":
        new = raw + c.draw(st.binary(min_size=1, max_size=64), "tail")
    elif how == "random":
        new = c.draw(st.binary(min_size=0, max_size=512), "random")
    elif how == "zeros":
        new = bytes(len(raw))
    else:
        new = b""
    f.write_bytes(new)
    return f"chunk {f.name} bytes {how} ({len(raw)} -> {len(new)})"


def _json_junk() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(JUNK_VALUES),
                     st.lists(st.integers(-2, 2**41), min_size=0, max_size=6))


def k_json(c: Ctx) -> str:
    mf = c.meta_file()
    text = mf.read_text()
    how = c.draw(st.sampled_from(["set_key", "del_key", "truncate", "garbage", "shape",
                                  "chunks", "dtype", "codecs", "fill"]), "json")
    if how == "truncate":
        mf.write_text(text[: c.draw(st.integers(0, len(text) - 1), "keep")])
        return "metadata json truncated"
    if how == "garbage":
        mf.write_text(c.draw(st.text(max_size=40), "garbage"))
        return "metadata json garbage"
    meta = json.loads(text)
    v2 = meta.get("zarr_format") == 2
    if how == "shape" and "shape" in meta:
        meta["shape"] = c.draw(st.lists(st.sampled_from([0, 1, 2, 5, 7, 2**40]),
                                        min_size=len(meta["shape"]),
                                        max_size=len(meta["shape"])), "shape")
    elif how == "chunks" and "shape" in meta:
        n = len(meta["shape"])
        new = c.draw(st.lists(st.sampled_from([0, 1, 3, 2**40]), min_size=n, max_size=n),
                     "chunks")
        if v2:
            meta["chunks"] = new
        else:
            meta["chunk_grid"]["configuration"]["chunk_shape"] = new
    elif how == "dtype" and "shape" in meta:
        new_dtype = c.draw(st.sampled_from(["<i4", "<f8", "|b1", "<c16", ">i4", "|u1", "<U8",
                                            "int8", "float32", "bool", "string"]), "dt")
        meta["dtype" if v2 else "data_type"] = new_dtype
    elif how == "codecs" and "shape" in meta:
        if v2:
            meta["compressor"] = c.draw(st.sampled_from([None, {"id": "zlib", "level": 1},
                                                         {"id": "nosuch"}]), "comp")
        else:
            meta["codecs"] = c.draw(st.sampled_from([
                [], [{"name": "bytes", "configuration": {"endian": "big"}}],
                [{"name": "bytes", "configuration": {"endian": "little"}}],
                [{"name": "bytes", "configuration": {"endian": "little"}},
                 {"name": "gzip", "configuration": {"level": 1}}]]), "codecs")
    elif how == "fill" and "shape" in meta:
        meta["fill_value"] = c.draw(_json_junk(), "fill")
    elif how == "del_key" and meta:
        del meta[c.draw(st.sampled_from(sorted(meta)), "key")]
    else:
        key = c.draw(st.sampled_from(sorted(meta) or ["x"]), "key")
        meta[key] = c.draw(_json_junk(), "value")
        how = f"set {key}"
    mf.write_text(json.dumps(meta))
    return f"metadata json {how}"


def k_attributes(c: Ctx) -> str:
    group = zarr.open_group(str(c.store / scan_group_name(c.scan)), mode="r+")
    name = c.draw(st.sampled_from(ATTRIBUTES), "attr")
    value = c.draw(_json_junk(), "attr value")
    group.attrs[name] = value
    return f"attribute {name} = {value!r}"


def k_file_type(c: Ctx) -> str:
    files = c.chunk_files() + [p for p in (c.node / m for m in METADATA_FILES) if p.exists()]
    if not files:
        return "no file"
    f = files[c.draw(st.integers(0, len(files) - 1), "file")]
    how = c.draw(st.sampled_from(["fifo", "directory", "link_out", "link_dev", "dangling",
                                  "delete", "link_in"]), "type")
    f.unlink()
    if how == "fifo":
        os.mkfifo(f)
    elif how == "directory":
        f.mkdir()
    elif how == "link_out":
        f.symlink_to(c.outside / "foreign.bin")
    elif how == "link_dev":
        f.symlink_to("/dev/zero")
    elif how == "dangling":
        f.symlink_to(c.store / "no-such-file")
    elif how == "link_in":
        f.symlink_to(c.store / "zarr.json")  # inside the store, but not this chunk
    return f"{f.relative_to(c.store)} -> {how}"


def k_values(c: Ctx) -> str:
    values = c.values()
    if values.dtype.kind not in "iuf" or values.size == 0:
        return "not numeric"
    new = values.astype(np.float64)
    idx = c.draw(st.integers(0, values.size - 1), "index")
    v = c.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30, -1e30, 1e-30]),
               "value")
    new.flat[idx] = v
    with np.errstate(all="ignore"):
        replace_array(c.store, c.scan, c.path, new.astype(values.dtype)
                      if values.dtype.kind == "f" else new)
    return f"value[{idx}] = {v}"


KINDS: dict[str, Callable[[Ctx], str]] = {
    "dtype": k_dtype, "shape": k_shape, "chunk_bytes": k_chunk_bytes, "json": k_json,
    "attributes": k_attributes, "file_type": k_file_type, "values": k_values,
}


# -- the property ----------------------------------------------------------------------------

def run_all_stages(store: Path, scan: int, table: Any) -> str:
    """Read and calibrate one scan in memory; the outcome as a short string."""
    session = open_session(store)
    data = session.load_scan(scan)
    cal = session.load_calibration(scan, data.meta.lloadsn)
    load = resolve(data, cal, CONFIG)
    prepared = prepare(data, CONFIG)
    atm = atmosphere(ScanGeometry.of(data), load, prepared, CONFIG, table)
    result = calibrate(data, load, prepared, atm)
    result.check()  # shapes, dtypes, NaN <-> blanking flags (ValueError = a bug)
    check_usable(scan, result.spectra, result.flags)
    for name in ("t_sys", "weight", "gamma", "t_rec"):
        arr = getattr(result, name)
        assert not np.isinf(arr).any(), f"{name} has inf"
    return "calibrated"


def bounded(fn: Callable[[], str]) -> str:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        raise AssertionError(f"no result within {TIMEOUT} s (hang)")
    if "error" in box:
        raise box["error"]
    return str(box["value"])


OUTCOMES: dict[str, int] = {}


# no shrinking: a failing example is already one described corruption, and shrinking a hang
# costs TIMEOUT per attempt (measured: > 5 min against the pre-issue-12 reader)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=list(HealthCheck), print_blob=True,
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(data=st.data())
def test_single_array_corruption_is_a_calibration_error_or_a_finite_result(store, outside,
                                                                           data):
    table = analytic_table()
    targets = arrays_of(store)
    kind = data.draw(st.sampled_from(sorted(KINDS)), label="kind")
    if kind == "attributes":
        scan, path = data.draw(st.sampled_from([1001, 1002]), label="scan"), ""
    else:
        choice = data.draw(st.sampled_from(targets + [(1002, "source"), (1001, "calibration"),
                                                      (1002, "")]), label="node")
        scan, path = choice
    ctx = Ctx(store, outside, scan, path, data)
    group_dir = store / scan_group_name(scan)
    backup = Path(str(store) + ".bak") / scan_group_name(scan)
    shutil.rmtree(backup.parent, ignore_errors=True)
    shutil.copytree(group_dir, backup, symlinks=True)
    try:
        try:
            what = KINDS[kind](ctx)
        except Exception as exc:  # the injector itself could not apply it: not a finding
            what = f"(not applied: {type(exc).__name__})"
        # the scans that depend on the corrupted group
        affected = [s for s in SCANS if s == scan or (scan == 1000 and s in (1002, 1003))]
        for s in affected:
            t0 = time.perf_counter()
            try:
                outcome = bounded(lambda s=s: run_all_stages(store, s, table))
            except CalibrationError as exc:
                assert exc.scan == s, f"{what}: error names scan {exc.scan}, not {s}: {exc}"
                assert f"scan {s}" in str(exc), str(exc)
                outcome = type(exc).__name__
            except BaseException as exc:
                raise AssertionError(f"corruption [{kind}] {scan_group_name(scan)}/{path}: "
                                     f"{what} -> scan {s} raised {type(exc).__name__}: "
                                     f"{exc}") from exc
            assert time.perf_counter() - t0 < TIMEOUT
            OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1
    finally:
        shutil.rmtree(group_dir, ignore_errors=True)
        if group_dir.is_symlink() or group_dir.exists():
            group_dir.unlink()
        shutil.copytree(backup, group_dir, symlinks=True)
        shutil.rmtree(backup.parent, ignore_errors=True)


def test_fuzz_outcomes_cover_failures_and_successes():
    """The property test above really corrupts: both failures and successes occurred (runs
    after it in file order; skipped when run alone)."""
    if not OUTCOMES:
        pytest.skip("run with the property test")
    assert OUTCOMES.get("calibrated", 0) > 0, OUTCOMES
    assert sum(n for k, n in OUTCOMES.items() if k != "calibrated") > 0, OUTCOMES
    assert len(OUTCOMES) >= 3, OUTCOMES  # several distinct error classes
