"""SDFITS export (issue 15): read back with astropy and with dysh itself."""

from __future__ import annotations

import datetime as dtm
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from calpipe import calibrate_store, l1
from calpipe.cli import main
from calpipe.config import CalibrationConfig
from calpipe.errors import CalpipeError
from calpipe.export.sdfits import export_sdfits, frequency_axis
from calpipe.testing import analytic_table

SCANS = [1001, 1002]  # TP, OTF (4 dumps x 2 ON subscans, 3 ON subscans), 2 x 2 pixels
SITE = (-67.7403, -22.9856, 5612.0)  # a high site, for SITELONG/LAT/ELEV
C_KM_S = 299792.458


@pytest.fixture(scope="module")
def store(small_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("sdfits") / "l1.zarr"
    result = calibrate_store(small_session, out, CalibrationConfig(), scans=SCANS,
                             table=analytic_table())
    assert result.exit_code == 0
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def fits_files(store: Path) -> dict[str, Path]:
    plain = export_sdfits(store, store.parent / "plain.fits")
    sited = export_sdfits(store, store.parent / "site.fits", site=SITE)
    assert plain.scans == sited.scans == tuple(SCANS)
    return {"plain": plain.path, "site": sited.path}


def expected_rows(store: Path, scan: int) -> dict[str, np.ndarray]:
    """What every row should hold, computed from the L1 dataset (xarray)."""
    ds = l1.open_scan(store, scan)
    c, n_t, r, a = ds.spectra.shape
    rows = n_t * r * a
    spectra = np.moveaxis(ds.spectra.values, 0, 3).reshape(rows, c)
    flags = np.moveaxis(ds.flags.values, 0, 3).reshape(rows, c)
    with warnings.catch_warnings():  # all-NaN t_sys of a blanked pixel, if any
        warnings.simplefilter("ignore", RuntimeWarning)
        tsys = np.nanmedian(ds.t_sys.values, axis=0)  # [R, A, S]
    tsys_t = np.moveaxis(tsys[..., np.repeat(np.arange(ds.sizes["subscan"]),
                                            n_t // ds.sizes["subscan"])], 2, 0)
    exptime = ds.exptime.sel(subscan=ds.time_subscan).values
    return {
        "DATA": spectra, "FLAGS": flags, "TSYS": tsys_t.reshape(rows),
        "EXPOSURE": np.repeat(exptime, r * a), "frequency": ds.frequency.values,
        "velocity": ds.velocity.values, "time": np.repeat(ds.time.values, r * a),
        "LONOFF": ds.lon_offset.values.reshape(rows),
        "LATOFF": ds.lat_offset.values.reshape(rows),
        "PIXEL": np.tile([str(x) for x in ds.pixel_id.values.ravel().tolist()], n_t),
    }


def test_astropy_reads_every_row(store, fits_files):
    from astropy.io import fits

    with fits.open(fits_files["plain"]) as hdul:
        assert [h.name for h in hdul[1:]] == ["SINGLE DISH"] * len(SCANS)
        for hdu, scan in zip(hdul[1:], SCANS, strict=True):
            assert hdu.header["EXTVER"] == scan
            want = expected_rows(store, scan)
            t = hdu.data
            assert len(t) == want["DATA"].shape[0]
            assert t["DATA"].dtype == np.dtype(">f4")
            np.testing.assert_array_equal(t["DATA"], want["DATA"])  # NaN where blanked
            np.testing.assert_array_equal(t["FLAGS"], want["FLAGS"])
            assert t["FLAGS"].dtype.kind == "u" and t["FLAGS"].max() > 0
            np.testing.assert_allclose(t["TSYS"], want["TSYS"], rtol=1e-7)
            np.testing.assert_array_equal(t["EXPOSURE"], want["EXPOSURE"])
            np.testing.assert_array_equal(t["LONOFF"], want["LONOFF"])
            np.testing.assert_array_equal(t["LATOFF"], want["LATOFF"])
            assert list(t["PIXEL"]) == list(want["PIXEL"])
            assert set(t["SCAN"]) == {scan}
            # frequency axis: nu(i) = CRVAL1 + (i + 1 - CRPIX1) CDELT1 reproduces L1 frequency
            i = np.arange(t["DATA"].shape[1])
            for row in (0, len(t) - 1):
                nu = t["CRVAL1"][row] + (i + 1 - t["CRPIX1"][row]) * t["CDELT1"][row]
                np.testing.assert_allclose(nu, want["frequency"], rtol=0, atol=1e-3)  # Hz
            assert set(t["CTYPE1"]) == {"FREQ-OBS"}
            assert hdu.columns["DATA"].unit == "K" and hdu.columns["CRVAL1"].unit == "Hz"
            # DATE-OBS: the dump times of the L1 time coordinate (UTC)
            got = np.array([np.datetime64(dtm.datetime.fromisoformat(x), "ns")
                            for x in t["DATE-OBS"]])
            assert np.abs((got - want["time"]).astype(np.int64)).max() < 2_000  # ns
            assert set(t["RADESYS"]) == {"AltAz"}
            assert "SITELONG" not in hdu.columns.names


def test_dysh_reads_spectra_axis_tsys_exposure(store, fits_files):
    sdfitsload = pytest.importorskip("dysh.fits.sdfitsload")
    import astropy.units as u

    sdf = sdfitsload.SDFITSLoad(str(fits_files["plain"]))
    for k, scan in enumerate(SCANS):
        want = expected_rows(store, scan)
        n = want["DATA"].shape[0]
        assert sdf.nrows(k) == n and sdf.nchan(k) == want["DATA"].shape[1]
        for row in (0, n // 2, n - 1):
            sp = sdf.getspec(row, bintable=k, setmask=True)
            np.testing.assert_allclose(sp.spectral_axis.to_value(u.Hz), want["frequency"],
                                       rtol=0, atol=1e-3)
            assert sp.flux.unit == u.K
            np.testing.assert_array_equal(sp.flux.value, want["DATA"][row])
            np.testing.assert_array_equal(sp.mask, want["FLAGS"][row] != 0)
            assert sp.meta["TSYS"] == pytest.approx(want["TSYS"][row], rel=1e-7)
            assert sp.meta["EXPOSURE"] == want["EXPOSURE"][row]
            # radio velocity in the topocentric frame: the L1 velocity coordinate
            np.testing.assert_allclose(sp.velocity.to_value(u.km / u.s), want["velocity"],
                                       rtol=0, atol=1e-6)
    masked_rows = [i for i in range(sdf.nrows(0)) if sdf.getspec(i, setmask=True).mask.any()]
    assert masked_rows, "the session has fill values: some rows must be masked"


def test_dysh_plots_a_spectrum_with_a_site(store, fits_files, tmp_path):
    sdfitsload = pytest.importorskip("dysh.fits.sdfitsload")
    import matplotlib

    matplotlib.use("Agg")
    from astropy.io import fits

    sdf = sdfitsload.SDFITSLoad(str(fits_files["site"]))
    sp = sdf.getspec(3, bintable=1, observer_location="from_meta")
    plot = sp.plot()
    png = tmp_path / "dysh.png"
    plot.savefig(png)
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 200 and float(img[..., :3].std()) > 0.05
    with fits.open(fits_files["site"]) as hdul:
        t = hdul[1].data
        assert set(t["RADESYS"]) == {"ICRS"}
        assert np.all((t["CRVAL2"] >= 0) & (t["CRVAL2"] < 360))
        assert np.all(np.abs(t["CRVAL3"]) <= 90)
        assert set(t["SITELONG"]) == {SITE[0]} and np.all((t["LST"] >= 0) & (t["LST"] < 86400))


def test_icrs_position_inverts_to_the_l0_horizontal_position(store):
    """The ICRS boresight of a row, transformed back to AltAz at the same site and time,
    gives the L1 azimuth / elevation (independent astropy round trip)."""
    import astropy.units as u
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    from calpipe.export.sdfits import horizontal_to_icrs

    ds = l1.open_scan(store, SCANS[1])
    mjd0 = float(l1.read_scan(store, SCANS[1]).mjd[0, 0])
    az, el = ds.azimuth.values[:1], ds.elevation.values[:1]
    ra, dec = horizontal_to_icrs(az, el, np.array([mjd0]), SITE)
    loc = EarthLocation.from_geodetic(SITE[0] * u.deg, SITE[1] * u.deg, SITE[2] * u.m)
    with iers.conf.set_temp("auto_download", False), \
            iers.conf.set_temp("iers_degraded_accuracy", "warn"):
        back = SkyCoord(ra=ra * u.deg, dec=dec * u.deg).transform_to(
            AltAz(obstime=Time(mjd0, format="mjd", scale="utc"), location=loc))
    assert abs(back.az.deg[0] - az[0]) * 3600 < 0.1
    assert abs(back.alt.deg[0] - el[0]) * 3600 < 0.1


def test_cli_export(store, tmp_path, capsys):
    out = tmp_path / "cli.fits"
    assert main(["export", str(store), str(out), "--format", "sdfits", "--scans", "1002"]) == 0
    assert "1 scan(s)" in capsys.readouterr().out
    from astropy.io import fits

    with fits.open(out) as hdul:
        assert [h.header.get("EXTVER") for h in hdul[1:]] == [1002]
    assert main(["export", str(store), str(out)]) == 1  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(store), str(out), "--overwrite", "--site", "1,2,3"]) == 0
    assert main(["export", str(tmp_path / "nope.zarr"), str(out), "--overwrite"]) == 1
    assert not list(tmp_path.glob(".*partial*"))


def test_frequency_axis_keywords():
    nu = 230e9 + np.arange(7) * -3.9e6
    crpix, crval, cdelt = frequency_axis(nu)
    np.testing.assert_allclose(crval + (np.arange(7) + 1 - crpix) * cdelt, nu, atol=1e-4)
    bent = nu.copy()
    bent[3] += 0.01 * 3.9e6
    with pytest.raises(CalpipeError, match="not linear"):
        frequency_axis(bent)
