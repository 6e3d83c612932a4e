"""The L0 reader (calpipe.l0, DESIGN 2.1): round trip against the raw store, Zarr v2, and one
test per validation error (class, scan number and array named in the message).

Read-only tests use ``small_session`` (see conftest.py): scans 1000 and 1003 are load scans,
1001 (TP, own calibration/), 1002 (OTF), 1004 (TP), 1005 (OTF) are science scans. Tests that
break a store get ``broken_session``, a copy of ``tiny_session``: 1000 (load), 1001 (TP, own
calibration/), 1002 (OTF) and 1003 (TP), the last two with lloadsn = 1000.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import zarr

from calpipe.errors import (
    CalibrationError,
    L0FormatError,
    MetadataError,
    MissingLoadError,
    StoreError,
)
from calpipe.l0 import FILL_VALUE, SUBSCAN_ARRAYS, open_session, scan_group_name
from calpipe.simulate import truth_path_for
from calpipe.testing import (
    add_group,
    chunk_files,
    copy_session,
    corrupt_metadata,
    delete_array,
    delete_chunk,
    make_session,
    read_array,
    replace_array,
    truncate_chunk,
)

SCIENCE = [1001, 1002, 1004, 1005]
LOAD_OF = {1001: 1001, 1002: 1000, 1004: 1003, 1005: 1003}  # whose calibration/ serves
META = [name for name in SUBSCAN_ARRAYS]


@pytest.fixture(scope="module")
def session(small_session: Path):
    return open_session(small_session)


@pytest.fixture(scope="module")
def v2_session(tmp_path_factory: pytest.TempPathFactory, atm_table, small_session_kwargs) -> Path:
    return make_session(tmp_path_factory.mktemp("l0v2") / "session.zarr", table=atm_table,
                        zarr_format=2, **small_session_kwargs)


def raw(store: Path, scan: int, path: str) -> np.ndarray:
    return read_array(store, scan, path)


# -- listing -------------------------------------------------------------------------------------

def test_scan_listing(session):
    assert session.zarr_format == 3
    assert session.scans() == [1000, 1001, 1002, 1003, 1004, 1005]
    assert session.source_scans() == SCIENCE
    assert [s for s in session.scans() if session.has_calibration(s)] == [1000, 1001, 1003]
    assert session.ignored_groups == []


def test_non_scan_groups_are_ignored_and_reported(broken_session):
    add_group(broken_session, "scan_12a")
    add_group(broken_session, "notes")
    s = open_session(broken_session)
    assert s.scans() == [1000, 1001, 1002, 1003]
    assert sorted(s.ignored_groups) == ["notes", "scan_12a"]


# -- round trip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scan", SCIENCE)
def test_counts_round_trip_fill_to_nan(session, small_session, scan):
    data = session.load_scan(scan)
    stored = raw(small_session, scan, "source/data_5d")
    assert stored.dtype == np.int32
    assert data.counts.dtype == np.float64
    assert data.counts.shape == stored.shape == data.shape
    fill = stored == FILL_VALUE
    assert fill.any(), "the session is simulated with fill values; none found"
    np.testing.assert_array_equal(np.isnan(data.counts), fill)
    np.testing.assert_array_equal(data.counts[~fill], stored[~fill].astype(np.float64))


@pytest.mark.parametrize("scan", SCIENCE)
def test_metadata_round_trip(session, small_session, scan):
    meta = session.load_scan(scan).meta
    np.testing.assert_array_equal(meta.sobsmode, raw(small_session, scan, "source/sobsmode"))
    for name in META:
        stored = raw(small_session, scan, f"source/{name}")
        value = getattr(meta, name)
        assert value.dtype == np.dtype(SUBSCAN_ARRAYS[name][1]), name
        np.testing.assert_array_equal(value, stored.astype(value.dtype), err_msg=name)
    assert meta.n_subscans == len(meta.mjd)


def test_optional_metadata_defaults(broken_session):
    delete_array(broken_session, 1002, "source/azimuth")
    delete_array(broken_session, 1002, "source/freq_off")
    meta = open_session(broken_session).load_scan(1002).meta
    np.testing.assert_array_equal(meta.azimuth, np.zeros(5))
    np.testing.assert_array_equal(meta.freq_off, np.zeros(5))


def test_otf_offsets_d_s_form(session, small_session):
    data = session.load_scan(1002)  # OTF: stored [D, S]
    for name in ("otf_lon", "otf_lat"):
        stored = raw(small_session, 1002, f"source/{name}")
        assert stored.ndim == 2
        assert np.any(stored != 0)
        np.testing.assert_array_equal(getattr(data, name), stored)


def test_otf_offsets_s_form_broadcast_over_dumps(broken_session):
    lon, lat = np.arange(5) * 0.1 + 0.05, -np.arange(5) * 0.2
    replace_array(broken_session, 1003, "source/otf_lon", lon)
    replace_array(broken_session, 1003, "source/otf_lat", lat)
    data = open_session(broken_session).load_scan(1003)
    d = data.shape[1]
    assert data.otf_lon.shape == data.otf_lat.shape == (d, 5)
    np.testing.assert_array_equal(data.otf_lon, np.tile(lon, (d, 1)))
    np.testing.assert_array_equal(data.otf_lat, np.tile(lat, (d, 1)))


def test_otf_offsets_absent_are_zero(broken_session):
    delete_array(broken_session, 1002, "source/otf_lon")
    data = open_session(broken_session).load_scan(1002)
    np.testing.assert_array_equal(data.otf_lon, np.zeros((data.shape[1], 5)))
    assert np.any(data.otf_lat != 0)


def test_pixel_offsets_r_a_s(session, small_session):
    data = session.load_scan(1001)
    for name in ("pixel_offset_lon", "pixel_offset_lat"):
        stored = raw(small_session, 1001, f"source/{name}")
        assert stored.shape == (2, 2, 5)
        assert np.any(stored != 0)
        np.testing.assert_array_equal(getattr(data, name), stored)


def test_pixel_offsets_legacy_r_a(broken_session):
    legacy = np.array([[0.0, 0.01], [0.02, 0.03]])
    replace_array(broken_session, 1002, "source/pixel_offset_lon", legacy)
    replace_array(broken_session, 1002, "source/pixel_offset_lat", -legacy)
    data = open_session(broken_session).load_scan(1002)
    assert data.pixel_offset_lon.shape == (2, 2, 5)
    for s in range(5):
        np.testing.assert_array_equal(data.pixel_offset_lon[:, :, s], legacy)
        np.testing.assert_array_equal(data.pixel_offset_lat[:, :, s], -legacy)


def test_frontend_backends_and_attrs(session, small_session):
    data = session.load_scan(1005)
    np.testing.assert_array_equal(data.frontend_backends,
                                  raw(small_session, 1005, "source/frontend_backends"))
    root = zarr.open_group(str(small_session), mode="r")
    assert data.attrs == dict(root[scan_group_name(1005)].attrs)
    assert data.attrs["scan_number"] == 1005
    assert session.attrs(1005) == data.attrs


def test_frontend_backends_absent_are_empty_strings(broken_session):
    delete_array(broken_session, 1001, "source/frontend_backends")
    data = open_session(broken_session).load_scan(1001)
    assert data.frontend_backends.tolist() == [""] * 5


@pytest.mark.parametrize("scan", SCIENCE)
def test_calibration_snapshot_own_group_or_lloadsn(session, small_session, scan):
    cal = session.load_calibration(scan)
    data = session.load_scan(scan)
    assert data.has_own_calibration == (scan == 1001)
    assert session.calibration_scan_for(scan) == LOAD_OF[scan]
    assert (cal.scan, cal.for_scan) == (LOAD_OF[scan], scan)
    stored = raw(small_session, cal.scan, "calibration/data_5d")
    np.testing.assert_array_equal(cal.counts, stored.astype(np.float64))
    assert cal.meta.sobsmode.tolist() == ["HOT", "COLD"]
    assert cal.meta.lloadsn is None
    np.testing.assert_array_equal(cal.thot, raw(small_session, cal.scan, "calibration/thot"))
    np.testing.assert_array_equal(cal.tcold, raw(small_session, cal.scan, "calibration/tcold"))
    np.testing.assert_array_equal(cal.meta.mjd, raw(small_session, cal.scan, "calibration/mjd"))
    assert cal.thot.dtype == cal.tcold.dtype == np.float64


def test_own_calibration_wins_over_lloadsn(session):
    # scan 1001 carries lloadsn = 1000, but its own calibration/ group is used
    assert session.load_scan(1001).meta.lloadsn.tolist() == [1000] * 5
    assert session.load_calibration(1001).scan == 1001
    assert session.load_calibration(1001, lloadsn=np.array([1003])).scan == 1001


def test_explicit_lloadsn_argument(session):
    assert session.load_calibration(1002, lloadsn=np.array([1003] * 5)).scan == 1003


@pytest.mark.parametrize("scan", SCIENCE)
def test_frequency_axes(session, small_session, small_session_kwargs, scan):
    meta = session.load_scan(scan).meta
    n = session.load_scan(scan).shape[0]
    nu_sig, nu_img = meta.frequency_axes(n)
    c = np.arange(n)
    ref = float(raw(small_session, scan, "source/ref_channel")[0])
    sig = raw(small_session, scan, "source/signal_freq")[0]
    img = raw(small_session, scan, "source/image_freq")[0]
    res = raw(small_session, scan, "source/freq_res")[0]
    off = raw(small_session, scan, "source/freq_off")[0]
    assert off == small_session_kwargs["freq_off_hz"] != 0
    np.testing.assert_allclose(nu_sig, sig + off + (c - ref) * res, rtol=0, atol=1e-3)
    np.testing.assert_allclose(nu_img, img + off - (c - ref) * res, rtol=0, atol=1e-3)
    assert np.all(np.diff(nu_sig) > 0) and np.all(np.diff(nu_img) < 0)  # image runs backwards
    assert nu_sig[int(ref)] == sig + off and nu_img[int(ref)] == img + off
    # the simulator's own (independently computed) axes, recorded in the truth store
    truth = zarr.open_group(str(truth_path_for(small_session)), mode="r")
    np.testing.assert_allclose(nu_sig, truth["frequency_signal"][...], rtol=0, atol=1e-3)
    np.testing.assert_allclose(nu_img, truth["frequency_image"][...], rtol=0, atol=1e-3)


def test_frequency_axes_per_subscan(broken_session):
    replace_array(broken_session, 1003, "source/freq_off", np.arange(5) * 1e6)
    meta = open_session(broken_session).load_scan(1003).meta
    sig0, img0 = meta.frequency_axes(16, subscan=0)
    sig3, img3 = meta.frequency_axes(16, subscan=3)
    np.testing.assert_allclose(sig3 - sig0, 3e6)
    np.testing.assert_allclose(img3 - img0, 3e6)  # freq_off shifts both sidebands up


# -- Zarr v2 -------------------------------------------------------------------------------------

def _assert_same(a, b, label):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            _assert_same(x, y, f"{label}.{f.name}")
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, f"{label}.{f.name}"
            np.testing.assert_array_equal(x, y, err_msg=f"{label}.{f.name}")
        else:
            assert x == y, f"{label}.{f.name}"


def test_zarr_v2_reads_identically(session, v2_session):
    assert (v2_session / ".zgroup").exists() and not (v2_session / "zarr.json").exists()
    s2 = open_session(v2_session)
    assert s2.zarr_format == 2
    assert s2.scans() == session.scans() and s2.source_scans() == session.source_scans()
    for scan in SCIENCE:
        _assert_same(session.load_scan(scan), s2.load_scan(scan), f"scan {scan}")
        _assert_same(session.load_calibration(scan), s2.load_calibration(scan), f"cal {scan}")


# -- validation errors: per scan -> CalibrationError subclass naming scan and array ----------------

def check(exc_info, cls, scan, array):
    exc = exc_info.value
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, CalibrationError)
    assert exc.scan == scan
    msg = str(exc)
    assert f"scan {scan}" in msg, msg
    assert array in msg, msg


@pytest.mark.parametrize("path", ["source/mjd", "source/elevation", "source/sobsmode",
                                  "source/data_5d", "source/signal_freq", "source/ref_channel"])
def test_missing_source_array(broken_session, path):
    delete_array(broken_session, 1002, path)
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, L0FormatError, 1002, path)


def test_missing_lloadsn_without_own_calibration(broken_session):
    delete_array(broken_session, 1003, "source/lloadsn")
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1003)
    check(ei, L0FormatError, 1003, "source/lloadsn")


def test_missing_lloadsn_with_own_calibration_is_fine(broken_session):
    delete_array(broken_session, 1001, "source/lloadsn")
    s = open_session(broken_session)
    assert s.load_scan(1001).meta.lloadsn is None
    assert s.load_calibration(1001).scan == 1001


@pytest.mark.parametrize("path", ["calibration/thot", "calibration/tcold",
                                  "calibration/data_5d", "calibration/sobsmode"])
def test_missing_calibration_array_of_load_scan(broken_session, path):
    delete_array(broken_session, 1000, path)
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_calibration(1002)
    check(ei, L0FormatError, 1002, path.split("/")[1])
    assert "1000" in str(ei.value)  # names the scan whose loads are broken as well


def test_data_5d_wrong_rank(broken_session):
    replace_array(broken_session, 1002, "source/data_5d", np.ones((8, 4, 2, 5), np.int32))
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, L0FormatError, 1002, "source/data_5d")
    assert "5 dimensions" in str(ei.value)


def test_data_5d_wrong_dtype(broken_session):
    replace_array(broken_session, 1002, "source/data_5d", np.ones((8, 4, 2, 2, 5), np.float32))
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, L0FormatError, 1002, "source/data_5d")
    assert "int32" in str(ei.value) and "float32" in str(ei.value)


def test_data_5d_empty(broken_session):
    replace_array(broken_session, 1002, "source/data_5d", np.ones((8, 0, 2, 2, 5), np.int32))
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, L0FormatError, 1002, "source/data_5d")


@pytest.mark.parametrize("path", ["source/mjd", "source/elevation", "source/lloadsn",
                                  "source/sobsmode", "source/frontend_backends"])
def test_metadata_wrong_length(broken_session, path):
    stored = read_array(broken_session, 1002, path)
    replace_array(broken_session, 1002, path, stored[:4])
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, L0FormatError, 1002, path)
    assert "(5,)" in str(ei.value)


@pytest.mark.parametrize(("path", "values"), [("source/otf_lon", np.zeros((3, 5))),
                                              ("source/pixel_offset_lat", np.zeros((2, 5)))])
def test_offsets_wrong_shape(broken_session, path, values):
    replace_array(broken_session, 1002, path, values)
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, L0FormatError, 1002, path)


@pytest.mark.parametrize(("path", "values"), [
    ("source/elevation", np.array(["a"] * 5)),
    ("source/sobsmode", np.zeros(5)),
])
def test_metadata_wrong_dtype(broken_session, path, values):
    replace_array(broken_session, 1003, path, values)
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_scan(1003)
    check(ei, L0FormatError, 1003, path)


def test_unknown_sobsmode(broken_session):
    replace_array(broken_session, 1003, "source/sobsmode", ["OFF", "ON", "OFF", "SKYDIP", "OFF"])
    with pytest.raises(MetadataError) as ei:
        open_session(broken_session).load_scan(1003)
    check(ei, MetadataError, 1003, "source/sobsmode")
    assert "SKYDIP" in str(ei.value)


def test_sobsmode_is_normalised(broken_session):
    replace_array(broken_session, 1003, "source/sobsmode", ["off", " ON", "OFF ", "on", "Off"])
    meta = open_session(broken_session).load_scan(1003).meta
    assert meta.sobsmode.tolist() == ["OFF", "ON", "OFF", "ON", "OFF"]


def test_unknown_calibration_sobsmode(broken_session):
    replace_array(broken_session, 1000, "calibration/sobsmode", ["HOT", "WARM"])
    with pytest.raises(MetadataError) as ei:
        open_session(broken_session).load_calibration(1002)
    check(ei, MetadataError, 1002, "calibration (of scan 1000)/sobsmode")
    assert "WARM" in str(ei.value)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_elevation(broken_session, value):
    el = read_array(broken_session, 1002, "source/elevation").copy()
    el[2] = value
    replace_array(broken_session, 1002, "source/elevation", el)
    with pytest.raises(MetadataError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, MetadataError, 1002, "source/elevation")
    assert "[2]" in str(ei.value)  # the subscan


@pytest.mark.parametrize("value", [0.0, -0.1, 2.0])
def test_elevation_out_of_range(broken_session, value):
    el = read_array(broken_session, 1002, "source/elevation").copy()
    el[1] = value
    replace_array(broken_session, 1002, "source/elevation", el)
    with pytest.raises(MetadataError) as ei:
        open_session(broken_session).load_scan(1002)
    check(ei, MetadataError, 1002, "source/elevation")


@pytest.mark.parametrize(("path", "value"), [("source/exptime", 0.0), ("source/tamb", -1.0),
                                             ("source/mjd", np.nan), ("source/freq_res", 0.0)])
def test_other_bad_metadata(broken_session, path, value):
    values = read_array(broken_session, 1001, path).copy()
    values[0] = value
    replace_array(broken_session, 1001, path, values)
    with pytest.raises(MetadataError) as ei:
        open_session(broken_session).load_scan(1001)
    check(ei, MetadataError, 1001, path)


def test_lloadsn_points_to_missing_scan(broken_session):
    replace_array(broken_session, 1003, "source/lloadsn", np.full(5, 999, np.int32))
    with pytest.raises(MissingLoadError) as ei:
        open_session(broken_session).load_calibration(1003)
    check(ei, MissingLoadError, 1003, "source/lloadsn")
    assert "999" in str(ei.value)


def test_lloadsn_points_to_scan_without_calibration(broken_session):
    replace_array(broken_session, 1003, "source/lloadsn", np.full(5, 1002, np.int32))
    s = open_session(broken_session)
    s.load_scan(1003)  # the scan itself is fine
    with pytest.raises(MissingLoadError) as ei:
        s.load_calibration(1003)
    check(ei, MissingLoadError, 1003, "source/lloadsn")
    assert "1002" in str(ei.value) and "calibration" in str(ei.value)


def test_load_scan_of_calibration_only_and_unknown_scan(session):
    with pytest.raises(L0FormatError) as ei:
        session.load_scan(1000)
    check(ei, L0FormatError, 1000, "source/")
    with pytest.raises(MissingLoadError) as ei:
        session.load_scan(42)
    assert ei.value.scan == 42 and "scan 42" in str(ei.value)


@pytest.fixture(scope="module")
def tiny_v2_session(tmp_path_factory: pytest.TempPathFactory, atm_table, small_session_kwargs):
    return make_session(tmp_path_factory.mktemp("l0v2") / "tiny.zarr", table=atm_table,
                        zarr_format=2, n_scans=4, load_every=4, **small_session_kwargs)


def _session_v(fmt: int, tiny_session: Path, tiny_v2_session: Path, scratch: Path) -> Path:
    return copy_session(tiny_session if fmt == 3 else tiny_v2_session, scratch / "s.zarr")


@pytest.mark.parametrize("fmt", [3, 2])
@pytest.mark.parametrize("index", [0, 3])
def test_truncated_chunk(tiny_session, tiny_v2_session, scratch, fmt, index):
    store = _session_v(fmt, tiny_session, tiny_v2_session, scratch)
    files = chunk_files(store, 1002, "source/data_5d")
    assert len(files) == 5  # one subscan per chunk
    if fmt == 3:
        assert all("c" in f.relative_to(store).parts for f in files)
    truncate_chunk(store, 1002, "source/data_5d", index)
    with pytest.raises(L0FormatError) as ei:
        open_session(store).load_scan(1002)
    check(ei, L0FormatError, 1002, "source/data_5d")


@pytest.mark.parametrize("fmt", [3, 2])
def test_deleted_chunk(tiny_session, tiny_v2_session, scratch, fmt):
    store = _session_v(fmt, tiny_session, tiny_v2_session, scratch)
    delete_chunk(store, 1002, "source/data_5d", 2)
    with pytest.raises(L0FormatError) as ei:
        open_session(store).load_scan(1002)
    check(ei, L0FormatError, 1002, "source/data_5d")
    assert "chunk" in str(ei.value)


def test_deleted_calibration_chunk(broken_session):
    delete_chunk(broken_session, 1000, "calibration/data_5d", 1)
    with pytest.raises(L0FormatError) as ei:
        open_session(broken_session).load_calibration(1003)
    check(ei, L0FormatError, 1003, "calibration (of scan 1000)/data_5d")


def test_missing_chunks_of_an_array_filled_with_the_fill_value_read_as_nan(broken_session):
    # an array whose own fill_value is the int32 fill: an absent chunk means "no data"
    values = read_array(broken_session, 1002, "source/data_5d")
    group = zarr.open_group(str(broken_session), mode="r+", path="scan_001002/source")
    arr = group.create_array("data_5d", shape=values.shape, dtype=np.int32, overwrite=True,
                             chunks=values.shape[:4] + (1,), fill_value=FILL_VALUE)
    arr[...] = values
    delete_chunk(broken_session, 1002, "source/data_5d", 2)
    counts = open_session(broken_session).load_scan(1002).counts
    assert np.all(np.isnan(counts[..., 2]))
    assert not np.all(np.isnan(counts[..., 1]))


@pytest.mark.parametrize("path", ["source/data_5d", "source/mjd", "source/sobsmode",
                                  "source/otf_lon", "source/pixel_offset_lon",
                                  "source/frontend_backends", "source/lloadsn"])
def test_corrupt_array_metadata(broken_session, path):
    corrupt_metadata(broken_session, 1002, path)
    s = open_session(broken_session)
    assert s.source_scans() == [1001, 1002, 1003]
    with pytest.raises(L0FormatError) as ei:
        s.load_scan(1002)
    check(ei, L0FormatError, 1002, path)
    s.load_scan(1003)  # the other scans are unaffected


def test_corrupt_calibration_array_metadata(broken_session):
    corrupt_metadata(broken_session, 1000, "calibration/thot")
    s = open_session(broken_session)
    with pytest.raises(L0FormatError) as ei:
        s.load_calibration(1002)
    check(ei, L0FormatError, 1002, "calibration (of scan 1000)/thot")
    s.load_calibration(1001)


@pytest.mark.parametrize("path", ["", "source"])
def test_corrupt_scan_group_metadata_fails_only_that_scan(broken_session, path):
    corrupt_metadata(broken_session, 1003, path)
    s = open_session(broken_session)
    assert s.scans() == [1000, 1001, 1002, 1003]
    # still listed, so that it fails (and is recorded) on its own
    assert s.source_scans() == [1001, 1002, 1003]
    with pytest.raises(L0FormatError) as ei:
        s.load_scan(1003)
    check(ei, L0FormatError, 1003, "scan_001003" if path == "" else "source/")
    for scan in (1001, 1002):
        s.load_scan(scan)
        s.load_calibration(scan)


# -- store-level errors -> StoreError ----------------------------------------------------------

def test_nonexistent_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_session(tmp_path / "nope.zarr")


def test_corrupt_root_metadata(broken_session):
    corrupt_metadata(broken_session)
    with pytest.raises(StoreError) as ei:
        open_session(broken_session)
    assert not isinstance(ei.value, CalibrationError)
    assert str(broken_session) in str(ei.value)


def test_two_groups_for_one_scan_number(broken_session):
    add_group(broken_session, "scan_1001")  # and scan_001001
    with pytest.raises(StoreError, match="two groups for scan 1001"):
        open_session(broken_session)


def test_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(StoreError):
        open_session(tmp_path / "empty.zarr")

