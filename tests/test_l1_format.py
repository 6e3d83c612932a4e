"""L1 format 2 (issue 15): self-describing xarray datasets, round trip, version check, crc32c."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from calpipe import calibrate_store, l1, stages
from calpipe.config import CalibrationConfig
from calpipe.errors import StoreError
from calpipe.l0 import open_session, scan_group_name
from calpipe.physics import flags as fl
from calpipe.testing import analytic_table, chunk_files

TP_SCAN, OTF_SCAN = 1001, 1002
MJD_UNIX = 40587.0  # MJD of 1970-01-01


def compute(session: Path, scan: int) -> stages.CalibrationResult:
    """The in-memory CalibrationResult of one scan (the stages, no writing)."""
    config = CalibrationConfig()
    s = open_session(session)
    data = s.load_scan(scan)
    cal = s.load_calibration(scan, data.meta.lloadsn)
    load = stages.resolve(data, cal, config)
    prepared = stages.prepare(data, config)
    atm = stages.atmosphere(stages.ScanGeometry.of(data), load, prepared, config,
                            analytic_table())
    return stages.calibrate(data, load, prepared, atm)


@pytest.fixture(scope="module")
def store(small_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("l1fmt") / "l1.zarr"
    result = calibrate_store(small_session, out, CalibrationConfig(), scans=[TP_SCAN, OTF_SCAN],
                             table=analytic_table())
    assert result.exit_code == 0
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def results(small_session: Path) -> dict[int, stages.CalibrationResult]:
    return {n: compute(small_session, n) for n in (TP_SCAN, OTF_SCAN)}


def open_ds(store: Path, scan: int) -> xr.Dataset:
    return xr.open_zarr(str(store), group=scan_group_name(scan), consolidated=False)


@pytest.mark.parametrize("scan", [TP_SCAN, OTF_SCAN])
def test_read_scan_round_trips_every_array_bit_identically(store, results, scan):
    written, direct = l1.read_scan(store, scan), results[scan]
    for name in l1.DIMS:
        a, b = getattr(written, name), getattr(direct, name)
        if name in l1.OPTIONAL_FIELDS and a is None and b is None:  # e.g. SKYDIFF off
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=True), name


@pytest.mark.parametrize("scan", [TP_SCAN, OTF_SCAN])
def test_dataset_dimensions_and_coordinates(store, results, scan):
    ds, res = open_ds(store, scan), results[scan]
    c, d, r, a, s = res.spectra.shape
    assert ds.spectra.dims == ("frequency", "time", "pixel", "array")
    assert dict(ds.sizes) == {"frequency": c, "time": d * s, "pixel": r, "array": a,
                              "subscan": s, "off_subscan": res.atm_fit_observed_k.shape[1]}
    assert {"frequency", "time", "subscan", "off_subscan"} <= set(ds.indexes)
    for name in ("velocity", "frequency_image", "time_subscan", "dump", "otf_lon",
                 "lon_offset", "lat_offset", "elevation", "azimuth", "exptime", "pixel_id",
                 "pixel_offset_lon", "frontend_backend"):
        assert name in ds.coords, name
    optional = {"scale_uncertainty"} if res.scale_uncertainty is not None else set()
    assert set(ds.data_vars) - optional == {
        "spectra", "flags", "t_sys", "weight", "t_rec", "gamma", "tau_signal", "tau_image",
        "tr_signal", "tr_image", "atm_fit_observed_k", "atm_fit_model_k"}
    # frequency: the signal-sideband sky frequency per channel
    np.testing.assert_array_equal(ds.frequency.values, res.frequency_signal)
    assert ds.frequency.attrs["units"] == "Hz"
    # time: datetime64 (UTC) of every dump, subscan-major
    assert ds.time.dtype.kind == "M"
    mjd = res.mjd.T.reshape(-1)
    expect = ((mjd - MJD_UNIX) * 86400e9).round().astype("int64")
    got = ds.time.values.astype("datetime64[ns]").astype("int64")
    assert np.abs(got - expect).max() < 2_000  # ns: float64 MJD resolution is ~1 us
    on = ds.attrs["reference"]["on_index"]
    np.testing.assert_array_equal(ds.subscan.values, on)
    np.testing.assert_array_equal(ds.time_subscan.values, np.repeat(on, d))
    np.testing.assert_array_equal(ds.dump.values, np.tile(np.arange(d), s))
    # angles in degrees
    np.testing.assert_allclose(ds.elevation.values, np.degrees(res.elevation.astype(float)))
    assert ds.elevation.attrs["units"] == "deg"
    # sky offsets per dump and pixel
    for axis in ("lon", "lat"):
        otf, pix = getattr(res, f"otf_{axis}"), getattr(res, f"pixel_offset_{axis}")
        want = otf.T[:, :, None, None] + np.moveaxis(pix, 2, 0)[:, None]  # [S, D, R, A]
        np.testing.assert_array_equal(ds[f"{axis}_offset"].values,
                                      want.reshape(s * d, r, a))
    # velocity: radio convention, topocentric, from rest_freq_hz
    rest = float(ds.attrs["rest_freq_hz"])
    np.testing.assert_allclose(ds.velocity.values,
                               299792.458 * (1 - res.frequency_signal / rest), rtol=1e-12)
    assert ds.velocity.attrs["units"] == "km s-1"
    assert ds.velocity.attrs["doppler_convention"] == "radio"
    assert ds.velocity.attrs["reference_frame"] == "topocentric"
    # CF attributes
    for name in ds.data_vars:
        assert ds[name].attrs.get("long_name"), name
    assert ds.spectra.attrs["units"] == "K"
    assert ds.flags.dtype == np.uint16
    assert ds.flags.attrs["flag_masks"] == list(fl.NAMES)
    assert ds.flags.attrs["flag_masks"][:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert ds.flags.attrs["flag_meanings"].split() == list(fl.NAMES.values())


def test_astronomer_operations(store, results):
    ds, res = open_ds(store, OTF_SCAN), results[OTF_SCAN]
    # nearest channel to a frequency between two channels
    k = 17
    nu = float(res.frequency_signal[k] + 0.3 * (res.frequency_signal[k + 1]
                                                - res.frequency_signal[k]))
    sel = ds.spectra.sel(frequency=nu, method="nearest")
    assert sel.dims == ("time", "pixel", "array")
    np.testing.assert_array_equal(sel.values, np.moveaxis(res.spectra[k], 3, 0).reshape(
        -1, *res.spectra.shape[2:4]))
    # mean over time = NaN-aware mean over every dump of every ON subscan
    mean = ds.spectra.mean("time")
    assert mean.dims == ("frequency", "pixel", "array")
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmean(res.spectra.astype(np.float64), axis=(1, 4))
    np.testing.assert_allclose(mean.values, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    # a band by frequency, a pixel by name, a time range by date
    band = ds.spectra.sel(frequency=slice(res.frequency_signal[10], res.frequency_signal[20]))
    assert band.sizes["frequency"] == 11
    pid = str(ds.pixel_id.values[1, 0])
    one = ds.spectra.where(ds.pixel_id == pid, drop=True)
    assert one.sizes["pixel"] == 1 and one.sizes["array"] == 1
    first = ds.spectra.sel(time=slice(ds.time.values[0], ds.time.values[2]))
    assert first.sizes["time"] == 3
    t0 = str(ds.time.values[0].astype("datetime64[ms]"))  # ISO text selects too
    assert ds.spectra.sel(time=slice(t0, None)).sizes["time"] == ds.sizes["time"]
    # a velocity axis
    v = ds.spectra.swap_dims(frequency="velocity")
    assert v.dims[0] == "velocity"
    v0 = v.sel(velocity=0.0, method="nearest")
    nearest = np.argmin(np.abs(ds.velocity.values))
    np.testing.assert_array_equal(v0.values, ds.spectra.isel(frequency=nearest).values)
    # per-subscan t_sys broadcast onto the time axis
    tsys_t = ds.t_sys.sel(subscan=ds.time_subscan)
    assert tsys_t.dims == ("frequency", "pixel", "array", "time")


def test_date_obs_is_iso_8601(store):
    import datetime as dtm

    ds = open_ds(store, TP_SCAN)
    t = dtm.datetime.fromisoformat(ds.attrs["date_obs"])
    assert t.year >= 2000
    assert ds.attrs["date_obs_l0"].startswith("MJD ")
    mjd = float(ds.attrs["date_obs_l0"].split()[1])
    assert abs((t - dtm.datetime(1858, 11, 17)).total_seconds() / 86400 - mjd) < 1e-6


def test_pixel_ids_from_frontend_backends_or_generated():
    gen = l1.pixel_ids(None, 2, 2)
    assert gen.tolist() == [["A0_PX00", "A1_PX00"], ["A0_PX01", "A1_PX01"]]
    # the simulator gives one different id per subscan: not pixel names
    assert l1.pixel_ids(["SIM_PX00", "SIM_PX01"], 2, 2).tolist() == gen.tolist()
    names = "HFAV_PX00,HFAV_PX01, HFAH_PX00 HFAH_PX01"
    got = l1.pixel_ids([names, names], 2, 2)
    assert got.tolist() == [["HFAV_PX00", "HFAV_PX01"], ["HFAH_PX00", "HFAH_PX01"]]
    assert l1.pixel_ids(["LFA_PX03"] * 3, 1, 1).tolist() == [["LFA_PX03"]]
    assert l1.pixel_ids(["A,A,B,C"], 2, 2).tolist() == gen.tolist()  # not distinct


@pytest.mark.parametrize("d", [1, 4, 6, 7, 12])
def test_time_chunks_never_straddle_subscans(d):
    shape = (4096, d * 5, 7, 2)
    chunks = l1.l1_chunks(shape, 4, n_dumps=d)
    assert d % chunks[1] == 0
    assert np.prod(chunks) * 4 <= l1.CHUNK_BYTES or chunks[1:] == (1, 1, 1)


def _set_version(store: Path, version: object) -> None:
    meta = store / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["format_version"] = version
    meta.write_text(json.dumps(doc))


@pytest.mark.parametrize(("version", "hint"), [(1, "older calpipe"), (3, "newer calpipe"),
                                               (None, "newer calpipe")])
def test_reader_refuses_unknown_versions(store, tmp_path, version, hint):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    assert l1.check_format(copy)["format_version"] == l1.FORMAT_VERSION == 2
    _set_version(copy, version)
    for reader in (l1.open_scan, l1.read_scan, l1.open_group):
        with pytest.raises(StoreError, match=f"format_version {version!r}.*{hint}"):
            reader(copy, TP_SCAN)
    with pytest.raises(StoreError, match="format_version"):
        l1.init_store(copy)  # never mix versions in one store


def test_flipped_byte_in_a_chunk_is_detected(store, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    for name in ("spectra", "t_sys", "frequency"):
        chunk = chunk_files(copy, OTF_SCAN, name)[0]
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x01
        chunk.write_bytes(bytes(data))
        with pytest.raises(StoreError, match=f"{name}.*unreadable.*checksum"):
            l1.read_scan(copy, OTF_SCAN)
        with pytest.raises(ValueError, match="checksum"):
            open_ds(copy, OTF_SCAN)[name].values  # noqa: B018
        shutil.copy(chunk_files(store, OTF_SCAN, name)[0], chunk)  # repair, next array
    l1.read_scan(copy, OTF_SCAN)  # repaired: reads again


def test_every_array_has_a_crc32c_codec(store):
    group = zarr.open_group(str(store / scan_group_name(OTF_SCAN)), mode="r")
    for name, arr in group.arrays():
        codecs = [c["name"] for c in arr.metadata.to_dict()["codecs"]]
        assert codecs[-1] == "crc32c", (name, codecs)
