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

from calpipe.config import CalibrationConfig
from calpipe.errors import BadLoadError, CalibrationError, MetadataError, MissingLoadError
from calpipe.l0 import (
    CalibrationSnapshot,
    ScanData,
    check_compatible,
    open_session,
)
from calpipe.physics import chopper
from calpipe.physics import flags as fl
from calpipe.physics.atmosphere import TORR_TO_HPA, AtmosphereResult
from calpipe.physics.calibrate import CalibratedArrays
from calpipe.physics.loads import CalibrationLoadFull
from calpipe.physics.reference import PreparedData, mean_over_dumps

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


def spur_mask_from_attrs(scan: ScanData) -> np.ndarray | None:
    """VEGAS spur channels [C] from the scan attribute ``vegas_spurs`` (written by the SDFITS
    importer: {"vsprval", "vspdelt", "vsprpix"}, or a list of them, one per subscan); None
    when the scan has none."""
    raw = scan.attrs.get("vegas_spurs")
    if raw is None:
        return None
    entries = raw if isinstance(raw, list) else [raw]
    c = scan.counts.shape[0]
    mask = np.zeros(c, dtype=bool)
    try:
        for e in entries:
            mask |= chopper.vegas_spur_mask(c, float(e["vsprval"]), float(e["vspdelt"]),
                                            float(e["vsprpix"]))
    except (TypeError, KeyError, ValueError):
        raise MetadataError(f"scan attribute 'vegas_spurs' = {raw!r}: expected vsprval, "
                            "vspdelt, vsprpix", scan=scan.scan,
                            array="attrs/vegas_spurs") from None
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
            spurs = spur_mask_from_attrs(scan) if options.flag_vegas_spurs else None
            results.append(calibrate_nod_scan(scan, cal, options, spurs))
        except CalibrationError as exc:
            log.warning("%s", exc)
            failures[n] = f"{type(exc).__name__}: {exc}"
    if not results:
        raise CalibrationError(f"no Nod scan calibrated in {store} "
                               f"({len(failures)} failed)")
    return NodSessionResult(scans=tuple(results), average=average_nod(results),
                            failures=failures)


# -- stage hooks: the same math through resolve -> prepare -> atmosphere -> calibrate -----------
#
# calpipe.stages branches here for a VANE snapshot (resolve), BEAM1/BEAM2 subscans (prepare,
# mode "nod"), and mode "nod" (atmosphere, calibrate), so that ``calpipe calibrate`` and the
# Snakemake workflow run vane / Nod scans with their usual artifacts and L1 output.

def options_from_config(config: CalibrationConfig) -> NodOptions:
    method = None if config.vane_t_cal_method == "auto" else config.vane_t_cal_method
    return NodOptions(t_cal=config.vane_t_cal, t_cal_method=method, t_atm=config.vane_t_atm,
                      tau_zenith=config.vane_tau_zenith,
                      flag_vegas_spurs=config.flag_vegas_spurs)


def _nod_frequency_axes(scan: ScanData) -> tuple[np.ndarray, np.ndarray]:
    """nu_sig, nu_img [C] of the first subscan; the others (Doppler-tracked GBT scans) must
    agree to 1 % of a channel (Nod pairs move by ~1e-4 channel)."""
    m = scan.meta
    c = scan.counts.shape[0]
    nu0, img0 = m.frequency_axes(c, 0)
    for s in range(1, m.n_subscans):
        nu, _ = m.frequency_axes(c, s)
        if np.max(np.abs(nu - nu0)) > 0.01 * abs(float(m.freq_res[0])):
            raise MetadataError(f"subscan {s} frequency axis differs from subscan 0 by more than "
                                "1 % of a channel", scan=scan.scan, array="source/signal_freq")
    return nu0, img0


def resolve_vane(scan: ScanData, cal: CalibrationSnapshot, config: CalibrationConfig
                 ) -> CalibrationLoadFull:
    """Stage "resolve" for a VANE / SKY snapshot (chopper wheel).

    c_hot = VANE, c_cold = SKY (dump means), t_hot_eff = T_cal, gamma = (VANE - SKY) / T_cal
    [counts per K on the T_A* scale]. T_rec is not measured by a vane / sky pair: NaN.
    BAD_CHANNEL: VEGAS spurs (``flag_vegas_spurs``), VANE <= SKY, or non-finite.
    The instrument factors are unity (gs_xs = 1, gi_xi = 0, f_eff = 1): T_cal already puts
    the data on the T_A* scale. Frayer's T_cal uses the mean elevation of the scan's subscans.
    """
    options = options_from_config(config)
    options.check()
    check_compatible(scan, cal)
    n = scan.scan
    where = "calibration" if cal.scan == n else f"calibration (of scan {cal.scan})"
    if not is_nod_scan(scan):
        raise MissingLoadError("a VANE/SKY calibration serves Nod (BEAM1/BEAM2) scans only; "
                               f"this scan has sobsmode {sorted(set(scan.meta.sobsmode))}",
                               scan=n, array=f"{where}/sobsmode")
    sv = _one_subscan(cal.meta.sobsmode, "VANE", n, where)
    ss = _one_subscan(cal.meta.sobsmode, "SKY", n, where)
    vane = np.nanmean(cal.counts[..., sv], axis=1) if cal.counts.shape[1] > 1 else \
        cal.counts[:, 0, :, :, sv]
    sky = np.nanmean(cal.counts[..., ss], axis=1) if cal.counts.shape[1] > 1 else \
        cal.counts[:, 0, :, :, ss]
    t_vane = float(cal.thot[sv])
    if options.method in ("vane", "frayer") and not (np.isfinite(t_vane) and t_vane > 0):
        raise BadLoadError(f"vane temperature thot = {t_vane} K is not usable", scan=n,
                           array=f"{where}/thot")
    t_cal = float(_t_cal(options, t_vane, float(cal.meta.tamb[ss]),
                         np.array([float(np.mean(scan.meta.elevation))]))[0])
    if not (np.isfinite(t_cal) and t_cal > 0):
        raise BadLoadError(f"T_cal = {t_cal} K is not usable", scan=n, array=f"{where}/tamb")
    nu_sig, nu_img = _nod_frequency_axes(scan)
    c = nu_sig.shape[0]
    spurs = spur_mask_from_attrs(scan) if options.flag_vegas_spurs else None
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(vane) & np.isfinite(sky) & (vane > sky))
    if spurs is not None:
        bad |= spurs[:, None, None]
    if bad.all():
        raise BadLoadError("no channel with VANE > SKY", scan=n, array=f"{where}/data_5d")
    with np.errstate(invalid="ignore"):
        gamma = (vane - sky) / t_cal
    nan3 = np.full(vane.shape, np.nan)
    return CalibrationLoadFull(
        scan=n, cal_scan=cal.scan, nu_sig=nu_sig, nu_img=nu_img, c_hot=vane, c_cold=sky,
        t_hot=t_vane, t_cold=float("nan"), t_hot_eff=np.full(c, t_cal),
        t_cold_eff=np.full(c, np.nan), gamma=gamma, t_rec_dsb=nan3, t_rec=nan3.copy(),
        bad_channel=bad, gs_xs=1.0, gi_xi=0.0, f_eff=1.0, physics=config.physics)


def prepare_nod(scan: ScanData) -> PreparedData:
    """Stage "prepare" for a Nod pair: each subscan is the other's reference, every pixel.

    on_index = [BEAM1, BEAM2]; C_REF of one = the dump mean of the other. For the two
    ``nod_beams`` this is the Nod spectrum of each beam; for the other pixels a
    position-switched sky difference (both positions off the source).
    """
    n = scan.scan
    _nod_beams(scan)  # validated here so that a bad attribute fails in prepare
    s1 = _one_subscan(scan.meta.sobsmode, "BEAM1", n, "source")
    s2 = _one_subscan(scan.meta.sobsmode, "BEAM2", n, "source")
    idx = np.array([s1, s2])
    off_mean = mean_over_dumps(scan.counts, idx)
    partner = np.array([1, 0])
    return PreparedData(scan=n, mode="nod", method="beam-switch", on_index=idx, off_index=idx,
                        off_mean=off_mean, ref_lo=partner, ref_hi=partner.copy(),
                        ref_weight=np.zeros(2), c_ref=off_mean[..., partner],
                        off_time_s=scan.counts.shape[1] * np.asarray(scan.meta.exptime)[idx])


def vane_atmosphere(scan: int, pamb_torr: np.ndarray, load: CalibrationLoadFull,
                    prepared: PreparedData) -> AtmosphereResult:
    """Stage "atmosphere" for vane calibration: nothing to fit. The vane's T_cal carries the
    atmospheric correction, so tr_signal = tr_image = 1, and pwv and tau are unknown (NaN)."""
    if np.isfinite(load.t_cold):  # resolve_vane leaves t_cold NaN; HOT/COLD loads set it
        raise MissingLoadError("a Nod scan needs a VANE/SKY calibration, found HOT/COLD loads",
                               scan=scan, array="calibration/sobsmode")
    c = load.nu_sig.shape[0]
    n_on = prepared.on_index.size
    return AtmosphereResult(
        scan=scan, method="none", per_pixel=False, pwv_mm=np.full((1, 1), np.nan),
        tau_signal=np.full((c, 1, 1), np.nan), tau_image=np.full((c, 1, 1), np.nan),
        tr_signal=np.ones((c, 1, 1, n_on)), tr_image=np.ones((c, 1, 1, n_on)),
        residual_rms_k=np.full((1, 1), np.nan), converged=True, n_channels=0, n_iterations=0,
        pressure_hpa=float(np.mean(pamb_torr)) * TORR_TO_HPA, t_atm_source="none",
        table_model="", table_digest="",
        message="chopper-wheel (vane) calibration: T_cal carries the atmosphere, no pwv fit")


def calibrate_nod_arrays(scan: ScanData, load: CalibrationLoadFull, prepared: PreparedData,
                         fedge: float = 0.1) -> CalibratedArrays:
    """Stage "calibrate" math for mode "nod" (replaces calibrate_full's equation):

    T_sys[r, a, s] = T_cal * mean(C_REF) / mean(VANE - C_REF)   over the inner band, good
                     channels (dysh getnod with a vane; GBTIDL's inclusive edges)
    T_A*           = T_sys * (C_ON - C_REF) / C_REF                  per dump
    weight         = |dnu| t_exp / T_sys^2,  t_exp = t_on t_ref / (t_on + t_ref),
                     t_ref = D * exptime of the reference subscan (its dump mean)
    """
    on = prepared.on_index
    c_ref = prepared.c_ref  # [C, R, A, S_on]
    vane = load.c_hot[..., None]
    t_cal = load.t_hot_eff[:, None, None, None]
    use = (~load.bad_channel & chopper.inner_channels(c_ref.shape[0], fedge)[:, None, None])
    use = use[..., None] & np.isfinite(c_ref) & np.isfinite(vane)
    num = np.where(use, c_ref, 0.0).sum(axis=0)
    den = np.where(use, vane - c_ref, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_sys_pix = t_cal[0] * num / den  # [R, A, S_on]
    t_sys_pix = np.where(use.any(axis=0) & (t_sys_pix > 0), t_sys_pix, np.nan)
    bad = np.broadcast_to(load.bad_channel[..., None], c_ref.shape)
    t_sys = np.where(bad, np.nan, np.broadcast_to(t_sys_pix[None], c_ref.shape))
    on_counts = scan.counts[..., on]  # [C, D, R, A, S_on]
    ref = c_ref[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        spectra = t_sys[:, None] * (on_counts - ref) / ref
    fill = ~np.isfinite(on_counts) | ~np.isfinite(ref)
    unusable = np.broadcast_to(bad[:, None], spectra.shape) | ~np.isfinite(
        np.broadcast_to(t_sys[:, None], spectra.shape))
    flags = (np.where(unusable, fl.BAD_CHANNEL, 0)
             | np.where(fill, fl.FILL_VALUE, 0)).astype(np.uint16)
    spectra = np.where(flags != 0, np.nan, spectra)
    n_d = scan.counts.shape[1]
    t_on = scan.meta.exptime[on]
    t_ref = n_d * scan.meta.exptime[on][prepared.ref_lo]
    t_exp = chopper.switched_exposure(t_on, t_ref)  # [S_on]
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = chopper.tsys_weight(t_exp, float(scan.meta.freq_res[0]), t_sys)
    return CalibratedArrays(spectra=spectra.astype(np.float32), flags=flags,
                            t_sys=t_sys.astype(np.float32), weight=weight.astype(np.float32))


def nod_attrs(scan: ScanData, load: CalibrationLoadFull, prepared: PreparedData,
              arrays: CalibratedArrays) -> dict[str, object]:
    """The ``nod`` scan attribute of an L1 group: which pixel of which S_on index is a Nod
    beam, T_cal, the per-beam T_sys and exposure, and the vane/sky T_sys per pixel."""
    b1, b2 = _nod_beams(scan)
    on = prepared.on_index
    t_on = scan.meta.exptime[on]
    t_ref = scan.counts.shape[1] * scan.meta.exptime[on][prepared.ref_lo]
    t_exp = chopper.switched_exposure(t_on, t_ref)
    beams = []
    for k, rcv in enumerate((b1, b2)):
        ts = arrays.t_sys[:, rcv, 0, k]
        ts = ts[np.isfinite(ts)]
        beams.append({"receiver": rcv, "s_on": k, "subscan": int(on[k]),
                      "t_sys_k": float(ts[0]) if ts.size else None,
                      "dump_exposure_s": float(t_exp[k]),
                      "exposure_s": float(scan.counts.shape[1] * t_exp[k])})
    vanecal = []
    for r in range(load.c_hot.shape[1]):
        row = []
        for a in range(load.c_hot.shape[2]):
            v = chopper.tsys_scalar(load.c_hot[:, r, a], load.c_cold[:, r, a],
                                    float(load.t_hot_eff[0]), "median",
                                    ~load.bad_channel[:, r, a])
            row.append(v if np.isfinite(v) else None)
        vanecal.append(row)
    return {"beams": beams, "t_cal_k": float(load.t_hot_eff[0]), "t_vane_k": load.t_hot,
            "vane_sky_t_sys_k": vanecal}


def nod_average_from_l1(l1_store: str | Path, array: int = 0) -> NodAverage:
    """The average Nod spectrum of every Nod scan in an L1 store (as ``average_nod``):
    beam spectra are read from ``spectra`` at the pixels / S_on named by ``attrs["nod"]``
    (through ``calpipe.l1.read_scan``, whatever the L1 format's on-disk layout)."""
    from calpipe import l1

    spectra, t_sys, exposure, dnu = [], [], [], []
    for scan in l1.list_scans(l1_store):
        result = l1.read_scan(l1_store, scan)
        nod: Any = result.attrs.get("nod")
        if not nod:
            continue
        spec = np.asarray(result.spectra, dtype=np.float64)  # [C, D, R, A, S_on]
        ts = np.asarray(result.t_sys, dtype=np.float64)  # [C, R, A, S_on]
        freq = np.asarray(result.frequency_signal)
        res = abs(float(freq[1] - freq[0])) if freq.size > 1 else 1.0
        for b in nod["beams"]:
            r, k = int(b["receiver"]), int(b["s_on"])
            column = ts[:, r, array, k]
            tsys = float(column[np.isfinite(column)][0])
            per_dump = spec[:, :, r, array, k].T  # [D, C]
            n_d = per_dump.shape[0]
            w = chopper.weighted_average(per_dump, np.full(n_d, tsys),
                                         np.full(n_d, float(b["dump_exposure_s"])), res,
                                         tsys_mean="rms")
            spectra.append(w.spectrum)
            t_sys.append(w.t_sys)
            exposure.append(w.exposure)
            dnu.append(res)
    if not spectra:
        raise CalibrationError(f"no Nod scan in {l1_store}")
    x = np.stack(spectra)
    avg = chopper.weighted_average(x, np.array(t_sys), np.array(exposure), np.array(dnu),
                                   ~np.isfinite(x), tsys_mean="linear")
    return NodAverage(spectrum=avg.spectrum, t_sys=avg.t_sys, exposure=avg.exposure,
                      rms=chopper.spectrum_rms(avg.spectrum), weights=avg.weights,
                      n_spectra=len(spectra))


__all__ = [
    "NodAverage",
    "calibrate_nod_arrays",
    "nod_attrs",
    "nod_average_from_l1",
    "prepare_nod",
    "resolve_vane",
    "vane_atmosphere",
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
