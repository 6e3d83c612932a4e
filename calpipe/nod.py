"""Vane-calibrated, beam-switched (Nod) scans: the GBT Argus observing mode (issue 16).

An L0 Nod scan has two subscans, ``BEAM1`` and ``BEAM2``; the scan attribute ``nod_beams``
names the two receivers (pixels) that take turns on the source. Its ``calibration/`` group
(own, or of scan ``lloadsn``) holds a ``VANE`` and a ``SKY`` subscan. Per pair and per beam
(calpipe.physics.chopper for the equations):

  beam 1: ON = receiver b1 in BEAM1, OFF = b1 in BEAM2;  beam 2: ON = b2 in BEAM2, OFF = b2 in BEAM1
  T_sys  = T_cal * mean(OFF) / mean(VANE - OFF)     (inner 80 % of the band, spurs excluded)
  T_A*   = T_sys * (ON - OFF) / OFF,   t_exp = t_on t_off / (t_on + t_off)

Dump d of ON is referenced to dump d of OFF. The average over dumps, beams and pairs weights
each spectrum by w = t_exp * dnu / T_sys^2 (section "Averaging" in docs/physics.md). This is
exactly what dysh 1.1.0's ``getnod(..., vane=...)`` followed by ``timeaverage()`` computes;
tests/test_gbt_argus.py checks it against dysh on real data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calpipe.errors import BadLoadError, CalibrationError, MetadataError, MissingLoadError
from calpipe.l0 import CalibrationSnapshot, ScanData, check_compatible, open_session
from calpipe.physics import chopper

log = logging.getLogger(__name__)

TcalMethod = Literal["given", "ambient", "vane", "frayer"]
T_CAL_METHODS = ("given", "ambient", "vane", "frayer")


@dataclass(frozen=True)
class NodOptions:
    """Options of the vane / Nod calibration (docs/usage.md, "Importing GBT data").

    ``t_cal_method``: ``given`` uses ``t_cal`` (K); ``ambient`` the SKY subscan's ``tamb``
    (dysh ``vanecal`` without opacity); ``vane`` the vane temperature ``thot`` (dysh's
    ``VaneSpectrum`` without opacity); ``frayer`` Frayer et al. eq. 22 with ``t_atm`` (K) and
    ``tau_zenith`` (neper) at the GBT airmass of the ON subscan. ``None`` -> ``given`` when
    ``t_cal`` is set, else ``ambient``.
    """

    t_cal: float | None = None
    t_cal_method: TcalMethod | None = None
    t_atm: float | None = None
    tau_zenith: float | None = None
    t_bkg: float = chopper.CMB_K
    flag_vegas_spurs: bool = True
    fedge: float = 0.1
    vanecal_method: chopper.TsysMethod = "median"  # the scalar "vanecal" T_sys per beam
    array: int = 0  # A index to calibrate

    @property
    def method(self) -> str:
        if self.t_cal_method is not None:
            return self.t_cal_method
        return "given" if self.t_cal is not None else "ambient"

    def check(self) -> None:
        from calpipe.errors import ConfigError

        if self.method not in T_CAL_METHODS:
            raise ConfigError(f"t_cal_method {self.method!r}; expected one of {T_CAL_METHODS}")
        if self.method == "given" and (self.t_cal is None or not self.t_cal > 0):
            raise ConfigError("t_cal_method 'given' needs t_cal > 0 (K)")
        if self.method == "frayer" and (self.t_atm is None or self.tau_zenith is None):
            raise ConfigError("t_cal_method 'frayer' needs t_atm (K) and tau_zenith (neper)")
        if self.vanecal_method not in chopper.TSYS_METHODS:
            raise ConfigError(f"vanecal_method {self.vanecal_method!r}; expected one of "
                              f"{chopper.TSYS_METHODS}")


@dataclass(frozen=True)
class NodBeam:
    """One beam of one Nod pair: T_A* per dump and its T_sys, exposure, weights."""

    scan: int
    beam: int  # 1 or 2
    receiver: int  # R index
    spectra: np.ndarray  # [D, C] T_A* (K); NaN where masked
    mask: np.ndarray  # [C] channels left out (VEGAS spurs, non-finite)
    t_sys: np.ndarray  # [D] K
    t_cal: np.ndarray  # [D] K
    exposure: np.ndarray  # [D] s
    delta_freq: float  # Hz
    vane_t_sys: float  # scalar T_sys from VANE and SKY (dysh vanecal), K
    vane_t_sys_spectrum: np.ndarray  # [C] T_cal SKY / (VANE - SKY), K

    def average(self) -> chopper.WeightedAverage:
        """Average over dumps: weights t_exp dnu / T_sys^2, T_sys as the weighted rms."""
        mask = np.broadcast_to(self.mask, self.spectra.shape)
        return chopper.weighted_average(self.spectra, self.t_sys, self.exposure,
                                        self.delta_freq, mask, tsys_mean="rms")


@dataclass(frozen=True)
class NodScanResult:
    scan: int
    cal_scan: int
    beams: tuple[NodBeam, NodBeam]
    options: NodOptions


@dataclass(frozen=True)
class NodAverage:
    """The weighted average of every beam of every pair (dysh ``ScanBlock.timeaverage``)."""

    spectrum: np.ndarray  # [C] K, NaN where every input is masked
    t_sys: float  # K, weighted (linear) mean of the per-beam T_sys
    exposure: float  # s
    rms: float  # K, population std over the finite channels
    weights: np.ndarray  # [N beams] t_exp dnu / T_sys^2
    n_spectra: int


@dataclass(frozen=True)
class NodSessionResult:
    scans: tuple[NodScanResult, ...]
    average: NodAverage
    failures: dict[int, str] = field(default_factory=dict)


def is_nod_scan(scan: ScanData) -> bool:
    modes = set(scan.meta.sobsmode.tolist())
    return bool(modes) and modes <= {"BEAM1", "BEAM2"}


def is_vane_snapshot(cal: CalibrationSnapshot) -> bool:
    return "VANE" in set(cal.meta.sobsmode.tolist())


def _one_subscan(modes: np.ndarray, mode: str, scan: int, where: str) -> int:
    idx = np.flatnonzero(modes == mode)
    if idx.size != 1:
        err = MissingLoadError if where.startswith("calibration") else MetadataError
        raise err(f"expected exactly one {mode} subscan, found {idx.size}", scan=scan,
                  array=f"{where}/sobsmode")
    return int(idx[0])


def _dump_mean(x: np.ndarray) -> np.ndarray:
    """Mean over the dumps of [C, D], NaN-aware (all dumps of a subscan share one exptime,
    so this is the exposure-weighted mean dysh takes)."""
    with np.errstate(invalid="ignore"):
        return np.nanmean(x, axis=1) if x.shape[1] > 1 else x[:, 0]


def _nod_beams(scan: ScanData) -> tuple[int, int]:
    raw = scan.attrs.get("nod_beams")
    r = scan.counts.shape[2]
    try:
        b1, b2 = (int(v) for v in raw)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise MetadataError(f"scan attribute 'nod_beams' = {raw!r}: expected two receiver "
                            "indices", scan=scan.scan, array="attrs/nod_beams") from None
    if not (0 <= b1 < r and 0 <= b2 < r) or b1 == b2:
        raise MetadataError(f"nod_beams {[b1, b2]} out of range for R = {r}", scan=scan.scan,
                            array="attrs/nod_beams")
    return b1, b2


def _t_cal(options: NodOptions, t_vane: float, t_amb_sky: float,
           elevation_rad: np.ndarray) -> np.ndarray:
    """T_cal per entry of ``elevation_rad``."""
    method = options.method
    el = np.asarray(elevation_rad, dtype=np.float64)
    if method == "given":
        assert options.t_cal is not None
        return np.full(el.shape, float(options.t_cal))
    if method == "ambient":
        return np.full(el.shape, float(t_amb_sky))
    if method == "vane":
        return np.full(el.shape, float(t_vane))
    assert options.t_atm is not None and options.tau_zenith is not None
    return chopper.frayer_tcal(t_vane, options.t_atm, options.tau_zenith,
                               chopper.gbt_airmass(np.degrees(el)), options.t_bkg)


def _read_spurs(store: Path, scan: int, where: str, n_channels: int) -> np.ndarray | None:
    """Spur mask [C] from ``scan_N/<where>/vsprval|vspdelt|vsprpix``, None when absent."""
    import zarr

    from calpipe.l0 import scan_group_name

    try:
        g: Any = zarr.open_group(str(store), mode="r")[f"{scan_group_name(scan)}/{where}"]
        values = [np.asarray(g[k][...], dtype=np.float64) for k in ("vsprval", "vspdelt",
                                                                     "vsprpix")]
    except KeyError:
        return None
    mask = np.zeros(n_channels, dtype=bool)
    for v, d, p in zip(*values, strict=True):
        mask |= chopper.vegas_spur_mask(n_channels, float(v), float(d), float(p))
    return mask


def calibrate_nod_scan(scan: ScanData, cal: CalibrationSnapshot, options: NodOptions,
                       spurs: np.ndarray | None = None) -> NodScanResult:
    """Calibrate one Nod pair with a VANE / SKY snapshot (see the module docstring)."""
    options.check()
    check_compatible(scan, cal)
    n = scan.scan
    if not is_nod_scan(scan):
        raise MetadataError(f"not a Nod scan (sobsmode {scan.meta.sobsmode.tolist()})",
                            scan=n, array="source/sobsmode")
    b1, b2 = _nod_beams(scan)
    s1 = _one_subscan(scan.meta.sobsmode, "BEAM1", n, "source")
    s2 = _one_subscan(scan.meta.sobsmode, "BEAM2", n, "source")
    where = "calibration" if cal.scan == n else f"calibration (of scan {cal.scan})"
    sv = _one_subscan(cal.meta.sobsmode, "VANE", n, where)
    ss = _one_subscan(cal.meta.sobsmode, "SKY", n, where)
    a = options.array
    c = scan.counts.shape[0]
    if not 0 <= a < scan.counts.shape[3]:
        raise MetadataError(f"array index {a} out of range (A = {scan.counts.shape[3]})",
                            scan=n, array="source/data_5d")
    t_vane = float(cal.thot[sv])
    if options.method in ("vane", "frayer") and not (np.isfinite(t_vane) and t_vane > 0):
        raise BadLoadError(f"vane temperature thot = {t_vane} K is not usable", scan=n,
                           array=f"{where}/thot")
    mask = np.zeros(c, dtype=bool) if spurs is None else spurs.copy()
    inner = chopper.inner_channels(c, options.fedge)
    beams = []
    for beam, rcv, s_on, s_off in ((1, b1, s1, s2), (2, b2, s2, s1)):
        vane = _dump_mean(cal.counts[:, :, rcv, a, sv])
        sky = _dump_mean(cal.counts[:, :, rcv, a, ss])
        on = scan.counts[:, :, rcv, a, s_on].T  # [D, C]
        off = scan.counts[:, :, rcv, a, s_off].T
        use = ~mask
        # the scalar "vanecal" T_sys takes T_vane, T_amb and elevation of the SKY subscan
        t_cal_sky = _t_cal(options, float(cal.thot[ss]), float(cal.meta.tamb[ss]),
                           np.array([cal.meta.elevation[ss]]))[0]
        vane_tsys = chopper.tsys_scalar(
            vane, sky, t_cal_sky, options.vanecal_method,
            use if options.vanecal_method == "median" else use & inner)
        n_d = on.shape[0]
        t_cal = _t_cal(options, t_vane, float(cal.meta.tamb[ss]),
                       np.full(n_d, scan.meta.elevation[s_on]))
        t_sys = np.array([chopper.tsys_scalar(vane, off[d], float(t_cal[d]), "mean",
                                              use & inner) for d in range(n_d)])
        if not np.all(np.isfinite(t_sys) & (t_sys > 0)):
            raise BadLoadError(f"beam {beam} (receiver {rcv}): T_sys {t_sys.tolist()} K is not "
                               "finite and positive (VANE <= reference?)", scan=n,
                               array=f"{where}/data_5d")
        spectra = chopper.ta_star(on, off, t_sys[:, None])
        spectra[:, mask] = np.nan
        exposure = chopper.switched_exposure(np.full(n_d, scan.meta.exptime[s_on]),
                                             np.full(n_d, scan.meta.exptime[s_off]))
        dnu = 0.5 * (abs(float(scan.meta.freq_res[s_on])) + abs(float(scan.meta.freq_res[s_off])))
        beams.append(NodBeam(
            scan=n, beam=beam, receiver=rcv, spectra=spectra, mask=mask,
            t_sys=t_sys, t_cal=t_cal, exposure=exposure, delta_freq=dnu,
            vane_t_sys=vane_tsys,
            vane_t_sys_spectrum=chopper.tsys_spectrum(vane, sky, t_cal_sky),
        ))
    return NodScanResult(scan=n, cal_scan=cal.scan, beams=(beams[0], beams[1]), options=options)


def average_nod(results: list[NodScanResult] | tuple[NodScanResult, ...]) -> NodAverage:
    """Average every beam of every pair: first over each beam's dumps, then over the beams,
    each weighted by t_exp dnu / T_sys^2 (dysh ``ScanBlock.timeaverage``)."""
    per_beam = [b.average() for r in results for b in r.beams]
    if not per_beam:
        raise CalibrationError("no Nod spectrum to average")
    beams = [b for r in results for b in r.beams]
    spectra = np.stack([p.spectrum for p in per_beam])
    avg = chopper.weighted_average(
        spectra, np.array([p.t_sys for p in per_beam]), np.array([p.exposure for p in per_beam]),
        np.array([b.delta_freq for b in beams]), ~np.isfinite(spectra), tsys_mean="linear")
    return NodAverage(spectrum=avg.spectrum, t_sys=avg.t_sys, exposure=avg.exposure,
                      rms=chopper.spectrum_rms(avg.spectrum), weights=avg.weights,
                      n_spectra=len(per_beam))


def calibrate_nod_session(l0_store: str | Path, options: NodOptions = NodOptions(),
                          scans: list[int] | None = None) -> NodSessionResult:
    """Calibrate every Nod scan of an L0 store (or ``scans``) and average them.

    A scan that fails with a CalibrationError is recorded in ``failures`` and left out of
    the average; no Nod scan at all is a CalibrationError.
    """
    options.check()
    store = Path(l0_store)
    session = open_session(store)
    results: list[NodScanResult] = []
    failures: dict[int, str] = {}
    for n in session.source_scans():
        if scans is not None and n not in scans:
            continue
        try:
            scan = session.load_scan(n)
            if not is_nod_scan(scan):
                continue
            cal = session.load_calibration(n)
            if not is_vane_snapshot(cal):
                raise MissingLoadError("no VANE subscan in the calibration group", scan=n,
                                       array="calibration/sobsmode")
            spurs = None
            if options.flag_vegas_spurs:
                spurs = _read_spurs(store, n, "source", scan.counts.shape[0])
            results.append(calibrate_nod_scan(scan, cal, options, spurs))
        except CalibrationError as exc:
            log.warning("%s", exc)
            failures[n] = f"{type(exc).__name__}: {exc}"
    if not results:
        raise CalibrationError(f"no Nod scan calibrated in {store} "
                               f"({len(failures)} failed)")
    return NodSessionResult(scans=tuple(results), average=average_nod(results),
                            failures=failures)


__all__ = [
    "NodAverage",
    "NodBeam",
    "NodOptions",
    "NodScanResult",
    "NodSessionResult",
    "average_nod",
    "calibrate_nod_scan",
    "calibrate_nod_session",
    "is_nod_scan",
    "is_vane_snapshot",
]
