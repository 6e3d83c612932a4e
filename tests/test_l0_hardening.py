"""Issue 12, the L0 reader and the per-scan data: every malformed input is a specific
CalibrationError subclass naming the scan and the array, raised before anything is allocated
or opened that should not be (huge declared shapes, FIFOs, links out of the store), and no
scan is "calibrated" into all-NaN or overflowing spectra.

Stores: ``broken_session`` (conftest: a private copy of ``tiny_session``: 1000 load scan,
1001 TP with its own calibration/, 1002 OTF and 1003 TP on the loads of 1000) and small
hand-made arrays for the codec tests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr

from calpipe.config import CalibrationConfig
from calpipe.errors import (
    CalibrationError,
    L0FormatError,
    LowTransmissionError,
    MetadataError,
    MissingLoadError,
    NoValidDataError,
)
from calpipe.l0 import FILL_VALUE, ReadLimits, open_session, scan_group_name
from calpipe.physics import flags as fl
from calpipe.physics.calibrate import check_usable
from calpipe.stages import (
    ScanGeometry,
    atmosphere,
    calibrate,
    instrument_parameters,
    prepare,
    resolve,
)
from calpipe.testing import (
    array_dir,
    chunk_files,
    chunk_shape_key,
    copy_session,
    edit_metadata,
    make_session,
    metadata_file,
    read_array,
    replace_array,
)

CONFIG = CalibrationConfig()


def bounded(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """``fn(*args)`` in a daemon thread: a hang (e.g. on a FIFO) fails the test."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn.__name__} did not finish within {timeout} s (hang)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def fails(store: Path, scan: int, cls: type[CalibrationError], array: str, phrase: str = "",
          *, calibration: bool = False, limits: ReadLimits | None = None) -> CalibrationError:
    """Loading ``scan`` raises exactly ``cls``, naming the scan and ``array`` (and ``phrase``)."""
    def load() -> None:
        session = open_session(store, limits)
        data = session.load_scan(scan)
        if calibration:
            session.load_calibration(scan, data.meta.lloadsn)

    with pytest.raises(CalibrationError) as ei:
        bounded(load)
    exc = ei.value
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
    assert exc.scan == scan and f"scan {scan}" in str(exc), str(exc)
    assert array in str(exc), str(exc)
    assert phrase.lower() in str(exc).lower(), str(exc)
    return exc


# -- metadata types and values --------------------------------------------------------------------

@pytest.mark.parametrize(("path", "values"), [
    ("source/otf_lon", np.array(["1.0"] * 5)),
    ("source/otf_lat", np.array([True] * 5)),
    ("source/pixel_offset_lon", np.array([["a", "b"], ["c", "d"]])),
    ("source/pixel_offset_lat", np.ones((2, 2), dtype=np.complex128)),
    ("source/lloadsn", np.array(["1000"] * 5)),
    ("source/mjd", np.ones(5, dtype=bool)),
    ("source/freq_res", np.ones(5, dtype=np.complex64)),
])
def test_non_numeric_array_is_l0_format_error(broken_session, path, values):
    replace_array(broken_session, 1002, path, values)
    fails(broken_session, 1002, L0FormatError, path, "numeric dtype")


@pytest.mark.parametrize(("path", "index", "value"), [
    ("source/otf_lon", (1, 2), np.nan), ("source/otf_lat", (0, 0), np.inf),
    ("source/pixel_offset_lon", (1, 0, 3), np.nan), ("source/pixel_offset_lat", (0, 1, 0), -np.inf),
])
def test_non_finite_coordinates(broken_session, path, index, value):
    values = read_array(broken_session, 1002, path).astype(np.float64)
    values[index] = value
    replace_array(broken_session, 1002, path, values)
    fails(broken_session, 1002, MetadataError, path, "non-finite")


@pytest.mark.parametrize("value", [np.nan, 1000.5, -3.0, 1e12])
def test_lloadsn_must_be_a_scan_number(broken_session, value):
    replace_array(broken_session, 1002, "source/lloadsn", np.full(5, value))
    fails(broken_session, 1002, MetadataError, "source/lloadsn", "not a scan number")
    # the Snakemake scan listing goes through calibration_scan_for: same error, no ValueError
    with pytest.raises(MetadataError, match="source/lloadsn"):
        open_session(broken_session).calibration_scan_for(1002)


def test_non_numeric_lloadsn_in_the_scan_listing(broken_session):
    replace_array(broken_session, 1003, "source/lloadsn", np.array(["x"] * 5))
    with pytest.raises(L0FormatError, match="scan 1003, array 'source/lloadsn'"):
        open_session(broken_session).calibration_scan_for(1003)


def test_image_freq_must_be_positive(broken_session):
    replace_array(broken_session, 1002, "source/image_freq", np.full(5, -1.0))
    fails(broken_session, 1002, MetadataError, "source/image_freq", "> 0 Hz")


@pytest.mark.parametrize("elevation", [1e-6, math.radians(4.9)])
def test_tiny_positive_elevation_rejected_by_the_configurable_minimum(broken_session,
                                                                      elevation):
    el = read_array(broken_session, 1002, "source/elevation").copy()
    el[3] = elevation
    replace_array(broken_session, 1002, "source/elevation", el)
    fails(broken_session, 1002, MetadataError, "source/elevation", "min_elevation_deg")
    # a lower configured minimum accepts it
    limits = ReadLimits.from_config(CONFIG.replace(min_elevation_deg=0.0))
    meta = open_session(broken_session, limits).load_scan(1002).meta
    assert meta.elevation[3] == np.float32(elevation)


def test_read_limits_defaults_are_the_configuration_defaults():
    assert ReadLimits() == ReadLimits.from_config(CalibrationConfig())
    limits = ReadLimits.from_config(CONFIG.replace(max_scan_gib=0.5, max_chunks_per_array=7,
                                                   min_elevation_deg=10.0))
    assert limits == ReadLimits(1 << 29, 7, math.radians(10.0))


# -- declared shapes and chunks: refused before allocating -----------------------------------------

@pytest.mark.parametrize("path", ["source/data_5d", "source/mjd", "source/otf_lon",
                                  "calibration/data_5d"])
@pytest.mark.parametrize("fmt", [3, 2])
def test_zero_chunk_shape(path, fmt, tiny_session, tiny_v2_session, scratch):
    store = copy_session(tiny_session if fmt == 3 else tiny_v2_session, scratch / "s.zarr")

    def zero(meta: dict[str, Any]) -> None:
        box, key = chunk_shape_key(meta)
        box[key] = [0] * len(box[key])

    edit_metadata(store, 1001, path, zero)
    fails(store, 1001, L0FormatError, path, "chunk shape", calibration=True)


@pytest.mark.parametrize("fmt", [3, 2])
def test_huge_declared_shape_fails_before_allocating(fmt, tiny_session, tiny_v2_session,
                                                     scratch):
    store = copy_session(tiny_session if fmt == 3 else tiny_v2_session, scratch / "s.zarr")
    edit_metadata(store, 1002, "source/data_5d", lambda m: m.update(shape=[2**40, 4, 2, 2, 5]))
    fails(store, 1002, L0FormatError, "source/data_5d", "max_scan_gib")


def test_huge_declared_metadata_shape_is_a_shape_error(broken_session):
    edit_metadata(broken_session, 1002, "source/mjd", lambda m: m.update(shape=[2**40]))
    fails(broken_session, 1002, L0FormatError, "source/mjd", "expected shape (5,)")


def test_huge_declared_chunk_fails_before_allocating(broken_session):
    def big(meta: dict[str, Any]) -> None:
        box, key = chunk_shape_key(meta)
        box[key] = [2**40, 4, 2, 2, 1]

    edit_metadata(broken_session, 1002, "source/data_5d", big)
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "max_scan_gib")


def test_memory_budget_is_configurable(broken_session):
    # tiny_session's data_5d is 256 x 4 x 2 x 2 x 5 float64 = 160 KiB
    limits = ReadLimits.from_config(CONFIG.replace(max_scan_gib=100e3 / 2**30))
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "over the limit",
          limits=limits)
    open_session(broken_session, ReadLimits.from_config(CONFIG.replace(
        max_scan_gib=200e3 / 2**30))).load_scan(1002)


def test_too_many_chunks(broken_session):
    values = read_array(broken_session, 1002, "source/data_5d")
    group = zarr.open_group(str(array_dir(broken_session, 1002, "source")), mode="r+")
    arr = group.create_array("data_5d", shape=values.shape, dtype=np.int32, overwrite=True,
                             chunks=(16, 1, 1, 1, 1))  # 16 x 4 x 2 x 2 x 5 = 1280 chunks
    arr[...] = values
    limits = ReadLimits(max_chunks=1000)
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "1280 chunks", limits=limits)
    assert np.array_equal(open_session(broken_session, ReadLimits(max_chunks=1280)).load_scan(
        1002).counts, open_session(broken_session).load_scan(1002).counts, equal_nan=True)


def test_chunk_and_shape_of_different_rank(broken_session):
    def rank(meta: dict[str, Any]) -> None:
        box, key = chunk_shape_key(meta)
        box[key] = [5, 1]

    edit_metadata(broken_session, 1002, "source/elevation", rank)
    fails(broken_session, 1002, L0FormatError, "source/elevation")


# -- chunk files: regular files inside the store ---------------------------------------------

def test_fifo_chunk_is_refused_without_opening(broken_session):
    chunk = chunk_files(broken_session, 1002, "source/data_5d")[1]
    chunk.unlink()
    os.mkfifo(chunk)
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "is a FIFO")


def test_fifo_metadata_file_is_refused_without_opening(broken_session):
    meta = metadata_file(broken_session, 1002, "source/mjd")
    meta.unlink()
    os.mkfifo(meta)
    fails(broken_session, 1002, L0FormatError, "source/mjd", "FIFO")


def test_directory_as_chunk_file(broken_session):
    chunk = chunk_files(broken_session, 1002, "source/data_5d")[0]
    chunk.unlink()
    chunk.mkdir()
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "is a directory")


def test_device_as_chunk_file_via_symlink(broken_session):
    chunk = chunk_files(broken_session, 1002, "source/mjd")[0]
    chunk.unlink()
    chunk.symlink_to("/dev/zero")
    fails(broken_session, 1002, L0FormatError, "source/mjd", "outside the store")


def test_symlink_out_of_the_store_is_refused(broken_session, scratch):
    secret = scratch / "secret.bin"
    chunk = chunk_files(broken_session, 1002, "source/data_5d")[2]
    shutil.copy(chunk, secret)  # a valid chunk: zarr would read it without complaint
    chunk.unlink()
    chunk.symlink_to(secret)
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "outside the store")


def test_symlinked_chunk_directory_out_of_the_store_is_refused(broken_session, scratch):
    cdir = array_dir(broken_session, 1002, "source/data_5d") / "c"
    shutil.move(cdir, scratch / "elsewhere")
    cdir.symlink_to(scratch / "elsewhere")
    fails(broken_session, 1002, L0FormatError, "source/data_5d", "outside the store")


def test_symlink_inside_the_store_is_read(broken_session):
    # a link to another file of the same store is contained: it is read like the file
    files = chunk_files(broken_session, 1002, "source/data_5d")
    files[3].unlink()
    files[3].symlink_to(files[2])
    counts = open_session(broken_session).load_scan(1002).counts
    assert np.array_equal(counts[..., 3], counts[..., 2], equal_nan=True)


def test_scan_group_linked_out_of_the_store(broken_session, scratch):
    gdir = broken_session / scan_group_name(1003)
    shutil.move(gdir, scratch / "scan_001003")
    gdir.symlink_to(scratch / "scan_001003")
    s = open_session(broken_session)
    assert [g.path for g in s.invalid_groups()] == ["scan_001003"]
    assert "outside the store" in s.invalid_groups()[0].reason
    fails(broken_session, 1003, L0FormatError, "scan_001003", "outside the store")


# -- missing group metadata: reported, never skipped ---------------------------------------------

@pytest.mark.parametrize("fmt", [3, 2])
def test_scan_group_without_metadata_is_listed_and_fails(fmt, tiny_session, tiny_v2_session,
                                                         scratch):
    store = copy_session(tiny_session if fmt == 3 else tiny_v2_session, scratch / "s.zarr")
    (store / scan_group_name(1002) / ("zarr.json" if fmt == 3 else ".zgroup")).unlink()
    s = open_session(store)
    invalid = s.invalid_groups()
    assert [(g.path, g.scan) for g in invalid] == [("scan_001002", 1002)]
    assert "no zarr metadata file" in invalid[0].reason
    assert s.source_scans() == [1001, 1002, 1003]  # listed, so that it fails on its own
    fails(store, 1002, L0FormatError, "scan_001002", "no zarr metadata file")
    s.load_scan(1003)


def test_source_group_without_metadata_fails_not_skipped(broken_session):
    (broken_session / scan_group_name(1002) / "source" / "zarr.json").unlink()
    s = open_session(broken_session)
    assert [g.path for g in s.invalid_groups()] == ["scan_001002/source"]
    assert 1002 in s.source_scans()
    fails(broken_session, 1002, L0FormatError, "source/", "no zarr metadata file")


def test_own_calibration_without_metadata_does_not_fall_back_to_lloadsn(broken_session):
    # scan 1001 has its own loads and lloadsn = 1000: losing calibration/zarr.json must not
    # silently calibrate it with the loads of 1000
    (broken_session / scan_group_name(1001) / "calibration" / "zarr.json").unlink()
    s = open_session(broken_session)
    assert [g.path for g in s.invalid_groups()] == ["scan_001001/calibration"]
    with pytest.raises(L0FormatError, match="scan 1001, array 'calibration/'"):
        s.load_calibration(1001)


@pytest.mark.parametrize("path", ["source/azimuth", "source/otf_lon", "source/freq_off",
                                  "source/pixel_offset_lat", "source/frontend_backends"])
def test_optional_array_without_metadata_fails_not_zeros(broken_session, path):
    metadata_file(broken_session, 1002, path).unlink()
    fails(broken_session, 1002, L0FormatError, path, "no zarr metadata file")


def test_valid_store_has_no_invalid_groups(tiny_session):
    assert open_session(tiny_session).invalid_groups() == []


# -- integrity: a truncated blosc chunk is never decoded -----------------------------------------

def _blosc_array(path: Path, fmt: int, data: np.ndarray) -> None:
    if fmt == 2:
        comp: Any = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    else:
        comp = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    arr = zarr.create_array(str(path), shape=data.shape, chunks=data.shape, dtype=data.dtype,
                            zarr_format=fmt, compressors=comp)
    arr[...] = data


def test_root_cause_blosc_decodes_a_truncated_frame_from_foreign_memory():
    """Why tests/test_l0.py::test_truncated_chunk[3-2] was intermittent: c-blosc takes the
    frame length from the frame's own header (cbytes), not from the buffer, so a truncated
    frame is decoded from whatever memory follows it. Incompressible data (stored raw,
    'memcpyed') makes that deterministic: the decode succeeds and returns garbage."""
    data = np.random.default_rng(1).integers(-2**31, 2**31 - 1, 256, dtype=np.int32)
    codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    frame = bytes(codec.encode(data))
    assert int.from_bytes(frame[12:16], "little") == len(frame)  # cbytes
    try:
        out = np.frombuffer(codec.decode(frame[: len(frame) // 2]), dtype=np.int32)
    except Exception:  # a numcodecs that validates the frame: the hazard is gone upstream
        pytest.skip("this numcodecs rejects truncated blosc frames itself")
    assert out.shape == data.shape and not np.array_equal(out, data)


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.1, 0.001])
@pytest.mark.parametrize("fmt", [2, 3])
def test_truncated_blosc_chunk_is_never_decoded(scratch, fmt, keep):
    """Red without the header check: the decode of these frames 'succeeds' (see above)."""
    store = scratch / "s.zarr"
    data = np.random.default_rng(2).integers(-2**31, 2**31 - 1, (256, 1, 1, 1, 1),
                                             dtype=np.int32)
    root = zarr.open_group(str(store), mode="w", zarr_format=fmt)
    src = root.create_group(scan_group_name(7)).create_group("source")
    _blosc_array(array_dir(store, 7, "source/data_5d"), fmt, data)
    assert open_session(store).zarr_format == fmt
    chunk = chunk_files(store, 7, "source/data_5d")[0]
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(L0FormatError) as ei:
        open_session(store)._reader(7, "source").open_counts(src)
    assert "scan 7, array 'source/data_5d'" in str(ei.value)
    assert "blosc" in str(ei.value)


@pytest.mark.parametrize("index", [0, 3])
def test_truncated_v2_session_chunk_is_a_header_error(tiny_v2_session, scratch, index):
    store = copy_session(tiny_v2_session, scratch / "s.zarr")
    chunk = chunk_files(store, 1002, "source/data_5d")[index]
    raw = chunk.read_bytes()
    for keep in (0.5, 0.9, 0.99):
        chunk.write_bytes(raw[: int(len(raw) * keep)])
        fails(store, 1002, L0FormatError, "source/data_5d", "blosc header says")


def test_blosc_chunk_with_trailing_bytes_or_wrong_size(tiny_v2_session, scratch):
    store = copy_session(tiny_v2_session, scratch / "s.zarr")
    chunk = chunk_files(store, 1002, "source/data_5d")[1]
    raw = chunk.read_bytes()
    chunk.write_bytes(raw + b"\0" * 7)
    fails(store, 1002, L0FormatError, "source/data_5d", "blosc header says")
    head = bytearray(raw)
    head[4:8] = (int.from_bytes(raw[4:8], "little") // 2).to_bytes(4, "little")  # nbytes
    chunk.write_bytes(bytes(head))
    fails(store, 1002, L0FormatError, "source/data_5d", "decoded bytes")


# -- loads of another tuning -----------------------------------------------------------------

def _resolve(store: Path, scan: int) -> Any:
    s = open_session(store)
    data = s.load_scan(scan)
    return resolve(data, s.load_calibration(scan, data.meta.lloadsn), CONFIG)


@pytest.mark.parametrize(("name", "change"), [
    ("signal_freq", lambda v: v + 1e9), ("image_freq", lambda v: v - 2e9),
    ("freq_res", lambda v: v * 1.01), ("freq_res", lambda v: -v),
    ("freq_off", lambda v: v + 5e6), ("ref_channel", lambda v: v + 1.0),
])
def test_loads_of_another_tuning_fail_the_scan(broken_session, name, change):
    values = read_array(broken_session, 1000, f"calibration/{name}")
    replace_array(broken_session, 1000, f"calibration/{name}", change(values))
    with pytest.raises(MetadataError) as ei:
        _resolve(broken_session, 1002)
    assert f"scan 1002, array 'calibration (of scan 1000)/{name}'" in str(ei.value)
    assert "another frequency set-up" in str(ei.value)
    _resolve(broken_session, 1001)  # its own loads are untouched


def test_loads_within_half_a_channel_are_accepted(broken_session):
    values = read_array(broken_session, 1000, "calibration/ref_channel")
    replace_array(broken_session, 1000, "calibration/ref_channel", values + 0.25)
    _resolve(broken_session, 1002)


def test_loads_without_tuning_arrays_are_accepted(broken_session):
    for name in ("signal_freq", "image_freq", "freq_res", "freq_off", "ref_channel"):
        shutil.rmtree(array_dir(broken_session, 1000, f"calibration/{name}"))
    _resolve(broken_session, 1002)


# -- instrument parameters and attributes --------------------------------------------------------

def _with_attrs(store: Path, scan: int, **attrs: Any) -> Any:
    group = zarr.open_group(str(store / scan_group_name(scan)), mode="r+")
    group.attrs.update(attrs)
    return open_session(store).load_scan(scan)


@pytest.mark.parametrize(("name", "value", "phrase"), [
    ("gs_xs", True, "not a number"), ("gi_xi", False, "not a number"),
    ("f_eff", "0.9", "not a number"), ("gs_xs", [0.5], "not a number"),
    ("gs_xs", {"v": 1}, "not a number"), ("f_eff", 1.5, "out of range"),
    ("gs_xs", 7.0, "out of range"), ("gi_xi", -0.1, "out of range"),
    ("gs_xs", 1e-12, "signal weight"), ("gs_xs", 10**400, "out of range"),
])
def test_instrument_parameters_of_the_wrong_type_or_absurd(broken_session, name, value, phrase):
    data = _with_attrs(broken_session, 1002, **{name: value})
    with pytest.raises(MetadataError) as ei:
        instrument_parameters(data, CONFIG)
    assert f"scan 1002, array 'attrs/{'gs_xs' if phrase == 'signal weight' else name}'" \
        in str(ei.value)
    assert phrase in str(ei.value)


def test_rest_freq_must_be_a_real_number(broken_session):
    for value in ("230e9", True, float("nan")):
        data = _with_attrs(broken_session, 1002, rest_freq_hz=value)
        s = open_session(broken_session)
        cal = s.load_calibration(1002, data.meta.lloadsn)
        load, prepared = resolve(data, cal, CONFIG), prepare(data, CONFIG)
        from calpipe.testing import analytic_table

        atm = atmosphere(ScanGeometry.of(data), load, prepared, CONFIG, analytic_table())
        with pytest.raises(MetadataError, match="attrs/rest_freq_hz"):
            calibrate(data, load, prepared, atm)


# -- no silent false success --------------------------------------------------------------------

def test_all_on_subscans_filled_is_a_failure(broken_session, atm_table):
    counts = read_array(broken_session, 1003, "source/data_5d").copy()
    modes = read_array(broken_session, 1003, "source/sobsmode").tolist()
    on = [i for i, m in enumerate(modes) if m.strip().upper().endswith("ON")]
    counts[..., on] = FILL_VALUE
    replace_array(broken_session, 1003, "source/data_5d", counts)
    s = open_session(broken_session)
    data = s.load_scan(1003)
    load = resolve(data, s.load_calibration(1003, data.meta.lloadsn), CONFIG)
    prepared = prepare(data, CONFIG)
    atm = atmosphere(ScanGeometry.of(data), load, prepared, CONFIG, atm_table)
    with pytest.raises(NoValidDataError) as ei:
        calibrate(data, load, prepared, atm)
    assert "scan 1003, array 'source/data_5d'" in str(ei.value)
    assert "every ON sample is missing" in str(ei.value)


def test_check_usable_causes():
    shape = (4, 2, 1, 1, 3)
    spectra = np.full(shape, np.nan, np.float32)
    with pytest.raises(NoValidDataError, match="every channel is BAD_CHANNEL"):
        check_usable(5, spectra, np.full(shape, fl.BAD_CHANNEL, np.uint16))
    mixed = np.full(shape, fl.BAD_CHANNEL, np.uint16)
    mixed[0] = fl.FILL_VALUE
    with pytest.raises(NoValidDataError, match="25.0 % FILL_VALUE"):
        check_usable(5, spectra, mixed)
    good = np.ones(shape, np.float32)
    good[1, 0, 0, 0, 2] = np.inf
    with pytest.raises(NoValidDataError, match="scan 5, array 'spectra': 1 T_A"):
        check_usable(5, good, np.zeros(shape, np.uint16))
    good[1, 0, 0, 0, 2] = np.nan
    flags = np.zeros(shape, np.uint16)
    flags[1, 0, 0, 0, 2] = fl.FILL_VALUE
    check_usable(5, good, flags)  # one blanked sample, the rest finite: fine


@pytest.fixture(scope="module")
def tiny_v2_session(tmp_path_factory: pytest.TempPathFactory, atm_table, small_session_kwargs):
    return make_session(tmp_path_factory.mktemp("l0h") / "tiny2.zarr", table=atm_table,
                        zarr_format=2, n_scans=4, load_every=4, **small_session_kwargs)


def test_json_helpers_round_trip(broken_session):
    meta = metadata_file(broken_session, 1002, "source/mjd")
    before = json.loads(meta.read_text())
    edit_metadata(broken_session, 1002, "source/mjd", lambda m: None)
    assert json.loads(meta.read_text()) == before


@pytest.mark.parametrize(("label", "checksum"), [("zstd", False), ("zstd+checksum", True),
                                                 ("zstd+crc32c", True)])
def test_payload_bit_flips_are_caught_only_with_a_checksum(broken_session, label, checksum):
    """What the reader can and cannot see: a flipped byte inside a compressed payload without
    a checksum decodes to other counts (zstd without its frame checksum, the zarr default);
    with zstd's checksum or a crc32c codec every flip is an L0FormatError."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    comps: list[Any] = {"zstd": [ZstdCodec(level=0)],
                        "zstd+checksum": [ZstdCodec(level=0, checksum=True)],
                        "zstd+crc32c": [ZstdCodec(level=0), Crc32cCodec()]}[label]
    values = read_array(broken_session, 1002, "source/data_5d")
    adir = array_dir(broken_session, 1002, "source/data_5d")
    shutil.rmtree(adir)
    arr = zarr.create_array(str(adir), shape=values.shape, chunks=values.shape[:4] + (1,),
                            dtype=np.int32, compressors=comps)
    arr[...] = values
    ref = open_session(broken_session).load_scan(1002).counts
    chunk = chunk_files(broken_session, 1002, "source/data_5d")[0]
    raw = chunk.read_bytes()
    rng = np.random.default_rng(0)
    caught = silent = 0
    for _ in range(20):
        pos = int(rng.integers(0, len(raw)))
        flipped = bytearray(raw)
        flipped[pos] ^= int(rng.integers(1, 256))
        chunk.write_bytes(bytes(flipped))
        try:
            counts = open_session(broken_session).load_scan(1002).counts
        except L0FormatError:
            caught += 1
        else:
            silent += not np.array_equal(counts, ref, equal_nan=True)
    if checksum:
        assert caught == 20
    else:
        assert silent >= 15, (caught, silent)  # measured: 199 of 200 flips decode silently


def test_tiny_elevation_without_a_minimum_is_caught_at_the_data_level(broken_session,
                                                                     atm_table):
    """With min_elevation_deg = 0 a 1e-6 rad elevation of the ON subscans passes the reader
    (the OFFs keep theirs, so the pwv fit works); the airmass of 1e6 leaves no usable
    transmission: the low-transmission guard (issue 13) fails the scan, not an all-NaN
    'success'."""
    el = read_array(broken_session, 1003, "source/elevation").copy()
    modes = read_array(broken_session, 1003, "source/sobsmode").tolist()
    on = [i for i, m in enumerate(modes) if m.strip().upper().endswith("ON")]
    el[on] = 1e-6
    replace_array(broken_session, 1003, "source/elevation", el)
    s = open_session(broken_session, ReadLimits(min_elevation_rad=0.0))
    data = s.load_scan(1003)
    load = resolve(data, s.load_calibration(1003, data.meta.lloadsn), CONFIG)
    prepared = prepare(data, CONFIG)
    atm = atmosphere(ScanGeometry.of(data), load, prepared, CONFIG, atm_table)
    with pytest.raises(LowTransmissionError, match="scan 1003, array 'tr_signal'"):
        calibrate(data, load, prepared, atm)


def test_file_where_a_group_is_expected(broken_session):
    src = broken_session / scan_group_name(1002) / "source"
    shutil.rmtree(src)
    src.write_text("not a group")
    s = open_session(broken_session)
    assert [(g.path, g.reason) for g in s.invalid_groups()] == [
        ("scan_001002/source", "source is a regular file, expected a directory")]
    fails(broken_session, 1002, L0FormatError, "source/", "is a regular file")


def test_numbers_where_strings_are_expected(broken_session):
    replace_array(broken_session, 1002, "source/sobsmode", np.arange(5.0))
    fails(broken_session, 1002, L0FormatError, "source/sobsmode", "expected strings, got float64")


def test_store_reached_through_a_symlink_reads_normally(broken_session, scratch):
    """Containment is judged against the store's real path: a store opened through a link
    (a common deployment) is not 'outside itself'."""
    link = scratch / "link.zarr"
    link.symlink_to(broken_session)
    s = open_session(link)
    assert s.invalid_groups() == []
    ref = open_session(broken_session).load_scan(1002).counts
    assert np.array_equal(s.load_scan(1002).counts, ref, equal_nan=True)


def test_load_scan_without_group_metadata_is_not_a_science_scan(broken_session):
    """A broken calibration-only scan (no source/ directory) is reported, not calibrated;
    the scans using its loads fail naming it."""
    (broken_session / scan_group_name(1000) / "zarr.json").unlink()
    s = open_session(broken_session)
    assert [g.path for g in s.invalid_groups()] == ["scan_001000"]
    assert s.scans() == [1000, 1001, 1002, 1003] and s.source_scans() == [1001, 1002, 1003]
    with pytest.raises(MissingLoadError, match="scan 1002, array 'source/lloadsn'.*1000"):
        s.load_calibration(1002)


def test_relative_store_path_after_chdir(tmp_path, monkeypatch):
    """The containment check caches the store's real path: a relative path opened again from
    another directory (a long-lived process, the test suite) must not reuse the old answer."""
    for name in ("a", "b"):
        make_session(tmp_path / name / "s.zarr", n_scans=3, load_every=3)
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        s = open_session("s.zarr")
        n = s.source_scans()[0]
        assert s.load_scan(n).counts.shape[0] > 0
