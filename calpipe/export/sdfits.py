"""L1 -> single-dish FITS (SDFITS), readable by dysh and astropy (issue 15; docs/export.md).

One ``SINGLE DISH`` binary table per scan (``EXTVER`` = scan number; one table per scan keeps
the memory to one scan and lets scans differ in channel count), one row per dump, pixel and
ON subscan: row ``t * (R * A) + r * A + a`` for L1 time index ``t = s * D + d``.

Per row: ``DATA`` (T_A*, K, NaN where blanked), ``FLAGS`` (the L1 bit mask, uint16; dysh
masks every channel whose value is non-zero), ``TSYS`` (median over channels of the L1
``t_sys`` of the pixel and subscan, K), ``EXPOSURE`` (s), the linear frequency axis
``CTYPE1 = 'FREQ-OBS'`` (signal-sideband sky frequency, topocentric, AIPS convention),
``CRVAL1``, ``CDELT1``, ``CRPIX1`` (1-based), ``CUNIT1 = 'Hz'``, ``RESTFREQ``,
``VELDEF = 'RADI-OBS'`` (radio convention, topocentric: calpipe applies no Doppler
correction), ``DATE-OBS`` (UTC ISO-8601) and ``MJD-OBS``. Positions: without a site,
``CRVAL2/3`` = azimuth / elevation of the ON subscan (``CTYPE2/3 = 'AZ'/'EL'``,
``RADESYS = 'AltAz'``: L0 has no absolute sky coordinates); with a site, the same boresight
in ICRS (``RA``/``DEC``, ``RADESYS = 'ICRS'``) plus ``SITELONG/SITELAT/SITEELEV`` and ``LST``.
``LONOFF`` / ``LATOFF``: the pixel's sky offsets (L1 ``lon_offset`` / ``lat_offset``, deg).
Also ``OBJECT``, ``SCAN``, ``SUBSCAN``, ``INTNUM`` (dump), ``FEED``/``FDNUM``, ``PIXEL`` (L1
``pixel_id``), ``TELESCOP``, and ``CTYPE4 = 'STOKES'``, ``CRVAL4 = 0`` (dysh: "UNKNOWN";
calpipe does not know the polarisation of a pixel). ``TCAL`` holds the hot-load temperature.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import CalpipeError

log = logging.getLogger(__name__)

#: the frequency axis must be linear to this fraction of a channel to be written as CRVAL1 ...
LINEARITY_TOL = 1e-6


@dataclass(frozen=True)
class SdfitsExport:
    """What ``export_sdfits`` wrote."""

    path: Path
    scans: tuple[int, ...]
    n_rows: int


def frequency_axis(freq: np.ndarray) -> tuple[float, float, float]:
    """(CRPIX1, CRVAL1, CDELT1) of a linear frequency axis (reference at the centre channel).

    nu(i) = CRVAL1 + (i + 1 - CRPIX1) * CDELT1 for 0-based channel i. A non-linear axis
    (beyond LINEARITY_TOL of a channel) is a CalpipeError.
    """
    n = freq.size
    ref = n // 2
    cdelt = float((freq[-1] - freq[0]) / (n - 1)) if n > 1 else 1.0
    crval = float(freq[ref])
    model = crval + (np.arange(n) - ref) * cdelt
    if n > 1 and np.max(np.abs(model - freq)) > LINEARITY_TOL * abs(cdelt):
        raise CalpipeError("the L1 frequency axis is not linear: SDFITS cannot describe it")
    return float(ref + 1), crval, cdelt


def _scan_table(group: Any, scan: int, site: tuple[float, float, float] | None) -> Any:
    """The SDFITS binary table HDU of one L1 scan group."""
    from astropy.io import fits

    from calpipe import l1
    from calpipe.l1 import read_array

    attrs = dict(group.attrs)
    freq = read_array(group, l1.DIM_FREQUENCY)
    crpix, crval, cdelt = frequency_axis(freq)
    spectra = read_array(group, "spectra")  # [C, T, R, A]
    flags = read_array(group, "flags")
    c, n_t, n_r, n_a = spectra.shape
    n_p = n_r * n_a
    n_rows = n_t * n_p
    mjd = read_array(group, l1.DIM_TIME)  # [T]
    sub_of_t = np.repeat(np.arange(int(group[l1.DIM_SUBSCAN].shape[0])), l1.n_dumps(group))
    t_sys = read_array(group, "t_sys")  # [C, R, A, S]
    with warnings.catch_warnings():  # all-NaN channels of a blanked pixel
        warnings.simplefilter("ignore", RuntimeWarning)
        tsys_med = np.nanmedian(t_sys, axis=0)  # [R, A, S]

    def per_row_t(x: np.ndarray) -> np.ndarray:  # [T] -> rows
        return np.repeat(x, n_p)

    def per_row_tp(x: np.ndarray) -> np.ndarray:  # [T, R, A] -> rows
        return x.reshape(n_rows)

    exptime = read_array(group, "exptime").astype(np.float64)[sub_of_t]
    el = read_array(group, "elevation")[sub_of_t]
    az = read_array(group, "azimuth")[sub_of_t]
    tsys_rows = np.moveaxis(tsys_med[..., sub_of_t], 2, 0)  # [T, R, A]
    raw_ids = read_array(group, "pixel_id")  # [R, A], numpy StringDType
    pixel_id = np.array([str(x) for x in raw_ids.ravel().tolist()]).reshape(raw_ids.shape)
    rest = attrs.get("rest_freq_hz")
    restfreq = float(rest) if isinstance(rest, int | float) and rest > 0 else crval
    date_obs = np.array([l1.mjd_to_iso(m) for m in mjd])
    source = str(attrs.get("source", "") or "")
    telescope = str(attrs.get("telescope", "") or "")
    vsrc = attrs.get("velocity_source_kms")
    velocity = float(vsrc) * 1e3 if isinstance(vsrc, int | float) else 0.0

    site = site if site is not None else _site_from_attrs(attrs)
    if site is None:  # horizontal coordinates of the boresight
        frame, lon, lat = ("AZ", "EL", "AltAz"), az, el
    else:  # with a site, the boresight in ICRS (dysh then changes velocity frames correctly)
        frame = ("RA", "DEC", "ICRS")
        n_d = l1.n_dumps(group)  # at the ON subscan start, where L0 gives az / el
        ra, dec = horizontal_to_icrs(read_array(group, "azimuth"),
                                     read_array(group, "elevation"), mjd[::n_d], site)
        lon, lat = ra[sub_of_t], dec[sub_of_t]
    passthrough = attrs.get("passthrough") or {}
    observer = str(attrs.get("observer", "") or "")
    project = str(passthrough.get("obs_id", "") or passthrough.get("plan_id", "") or "")
    t_hot = float((attrs.get("instrument") or {}).get("t_hot_k") or np.nan)

    def const(value: Any, n: int = n_rows) -> np.ndarray:
        return np.full(n, value)

    # DATA / FLAGS rows: [C, T, R, A] -> [T, R, A, C] -> [rows, C]
    data = np.ascontiguousarray(np.moveaxis(spectra, 0, 3)).reshape(n_rows, c)
    flag_rows = np.ascontiguousarray(np.moveaxis(flags, 0, 3)).reshape(n_rows, c)
    s_len = max(16, max(len(x) for x in pixel_id.ravel()))
    cols = [
        fits.Column("OBJECT", f"{max(len(source), 1)}A", array=const(source)),
        fits.Column("TELESCOP", f"{max(len(telescope), 1)}A", array=const(telescope)),
        fits.Column("SCAN", "J", array=const(scan)),
        fits.Column("SUBSCAN", "J", array=per_row_t(read_array(group, "time_subscan"))),
        fits.Column("INTNUM", "J", array=per_row_t(read_array(group, "dump"))),
        fits.Column("FEED", "J", array=np.tile(np.arange(n_p), n_t)),
        fits.Column("PIXEL", f"{s_len}A", array=np.tile(pixel_id.ravel(), n_t)),
        fits.Column("DATE-OBS", "26A", array=per_row_t(date_obs)),
        fits.Column("MJD-OBS", "D", unit="d", array=per_row_t(mjd)),
        fits.Column("EXPOSURE", "D", unit="s", array=per_row_t(exptime)),
        fits.Column("DURATION", "D", unit="s", array=per_row_t(exptime)),
        fits.Column("TSYS", "E", unit="K", array=per_row_tp(tsys_rows)),
        fits.Column("CTYPE1", "8A", array=const("FREQ-OBS")),
        fits.Column("CUNIT1", "8A", array=const("Hz")),
        fits.Column("CRVAL1", "D", unit="Hz", array=const(crval)),
        fits.Column("CDELT1", "D", unit="Hz", array=const(cdelt)),
        fits.Column("CRPIX1", "D", array=const(crpix)),
        fits.Column("CTYPE2", "8A", array=const(frame[0])),
        fits.Column("CRVAL2", "D", unit="deg", array=per_row_t(lon)),
        fits.Column("CTYPE3", "8A", array=const(frame[1])),
        fits.Column("CRVAL3", "D", unit="deg", array=per_row_t(lat)),
        fits.Column("CTYPE4", "8A", array=const("STOKES")),
        fits.Column("CRVAL4", "J", array=const(0)),
        fits.Column("RADESYS", "8A", array=const(frame[2])),
        fits.Column("EQUINOX", "D", array=const(2000.0)),
        fits.Column("AZIMUTH", "D", unit="deg", array=per_row_t(az)),
        fits.Column("ELEVATIO", "D", unit="deg", array=per_row_t(el)),
        fits.Column("LONOFF", "D", unit="deg",
                    array=per_row_tp(read_array(group, "lon_offset"))),
        fits.Column("LATOFF", "D", unit="deg",
                    array=per_row_tp(read_array(group, "lat_offset"))),
        fits.Column("RESTFREQ", "D", unit="Hz", array=const(restfreq)),
        fits.Column("VELOCITY", "D", unit="m/s", array=const(velocity)),
        fits.Column("VELDEF", "8A", array=const("RADI-OBS")),
        fits.Column("OBSFREQ", "D", unit="Hz", array=const(crval)),
        fits.Column("IFNUM", "J", array=const(0)),
        fits.Column("FDNUM", "J", array=np.tile(np.arange(n_p), n_t)),
        fits.Column("PLNUM", "J", array=const(0)),
        fits.Column("OBSERVER", f"{max(len(observer), 1)}A", array=const(observer)),
        fits.Column("PROJID", f"{max(len(project), 1)}A", array=const(project)),
        fits.Column("PROC", "8A", array=const(str(attrs.get("mode", "")).upper())),
        fits.Column("TCAL", "E", unit="K", array=const(t_hot)),
        fits.Column("FREQRES", "D", unit="Hz", array=const(abs(cdelt))),
        fits.Column("BANDWID", "D", unit="Hz", array=const(abs(cdelt) * c)),
        fits.Column("DATA", f"{c}E", unit="K", dim=f"({c})", array=data),
        fits.Column("FLAGS", f"{c}I", bzero=32768, dim=f"({c})", array=flag_rows),
    ]
    if site is not None:  # dysh builds the observer (for plots, frame changes) from these
        cols += [fits.Column("SITELONG", "D", unit="deg", array=const(site[0])),
                 fits.Column("SITELAT", "D", unit="deg", array=const(site[1])),
                 fits.Column("SITEELEV", "D", unit="m", array=const(site[2])),
                 fits.Column("LST", "D", unit="s", array=per_row_t(lst_seconds(mjd, site[0])))]
    hdu = fits.BinTableHDU.from_columns(cols, name="SINGLE DISH")
    h = hdu.header
    h["EXTVER"] = (scan, "calpipe scan number")
    h["TELESCOP"] = telescope
    if (attrs.get("scale") or {}).get("scale") == "tmb":  # issue 14
        h["BUNIT"] = ("K", "T_mb (main-beam temperature, signal sideband)")
    else:
        h["BUNIT"] = ("K", "T_A* (antenna temperature, signal sideband)")
    h["CALPIPE"] = ("L1", "calibrated by calpipe; see docs/export.md")
    return hdu


def horizontal_to_icrs(az_deg: np.ndarray, el_deg: np.ndarray, mjd: np.ndarray,
                       site: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) in ICRS (deg) of horizontal coordinates seen from ``site`` at UTC ``mjd``.

    astropy's AltAz -> ICRS without refraction (pressure 0: the L0 elevation is taken as
    geometric) and with the bundled IERS tables only (no download; outside their range
    astropy's degraded-accuracy mode, arcsecond level, is accepted).
    """
    import astropy.units as u
    from astropy.coordinates import ICRS, AltAz, EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    location = EarthLocation.from_geodetic(site[0] * u.deg, site[1] * u.deg, site[2] * u.m)
    with iers.conf.set_temp("auto_download", False), \
            iers.conf.set_temp("iers_degraded_accuracy", "warn"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = AltAz(obstime=Time(np.asarray(mjd, np.float64), format="mjd", scale="utc"),
                      location=location)
        sky = SkyCoord(az=np.asarray(az_deg) * u.deg, alt=np.asarray(el_deg) * u.deg,
                       frame=frame).transform_to(ICRS())
    return np.asarray(sky.ra.deg), np.asarray(sky.dec.deg)


def lst_seconds(mjd: np.ndarray, lon_deg: float) -> np.ndarray:
    """Local mean sidereal time (s) from UTC MJD: GMST = 18.697374558 h + 24.06570982441908 h
    x (MJD - 51544.5), plus the east longitude; UT1 - UTC (< 0.9 s) is ignored."""
    gmst_h = 18.697374558 + 24.06570982441908 * (np.asarray(mjd, np.float64) - 51544.5)
    return np.mod(gmst_h + lon_deg / 15.0, 24.0) * 3600.0


SITE_ATTRS = ("site_lon_deg", "site_lat_deg", "site_height_m")


def _site_from_attrs(attrs: dict[str, Any]) -> tuple[float, float, float] | None:
    """(longitude east deg, latitude deg, height m) from scan attributes, when all present."""
    values = [attrs.get(k) for k in SITE_ATTRS]
    if all(isinstance(v, int | float) for v in values):
        return float(values[0]), float(values[1]), float(values[2])  # type: ignore[arg-type]
    return None


def export_sdfits(l1_store: str | Path, out: str | Path, scans: list[int] | None = None,
                  overwrite: bool = False, site: tuple[float, float, float] | None = None
                  ) -> SdfitsExport:
    """Write the scans of an L1 store (default: all) to one SDFITS file ``out``.

    ``site`` = (longitude east deg, latitude deg, height m) of the telescope, written as
    SITELONG / SITELAT / SITEELEV (else taken from the scan attributes site_lon_deg,
    site_lat_deg, site_height_m; else omitted: L0 does not require it).
    """
    from astropy.io import fits

    from calpipe import __version__, l1

    root_attrs = l1.check_format(l1_store)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")
    todo = l1.list_scans(l1_store) if scans is None else list(scans)
    if not todo:
        raise CalpipeError(f"L1 store {l1_store} has no scan to export")
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = f"calpipe {__version__}"
    primary.header["CALPIPE"] = (str(root_attrs.get("producer", "")), "L1 producer")
    primary.header["L1STORE"] = str(Path(l1_store).name)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    n_rows = 0
    try:  # one scan in memory at a time: each table is appended, then the file renamed
        fits.HDUList([primary]).writeto(tmp, overwrite=True)
        for scan in todo:
            hdu = _scan_table(l1.open_group(l1_store, scan), scan, site)
            n_rows += int(hdu.header["NAXIS2"])
            fits.append(tmp, hdu.data, hdu.header)
            del hdu
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s: %d scans, %d rows", out, len(todo), n_rows)
    return SdfitsExport(out, tuple(todo), n_rows)
