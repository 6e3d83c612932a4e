"""The per-scan stages (DESIGN 4.1): resolve -> prepare -> atmosphere -> calibrate -> write.

Each stage is a function of its inputs only, returning a frozen dataclass that can be saved to
and loaded from an artifact (``calpipe.artifacts``) without changing a value. Both the
in-process pipeline and the Snakemake rules call exactly these functions.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from calpipe import (
    dbs,  # issue 14: OTF-chopped / dual beam switch, the beams in L1 and the pair merge
    nod,  # issue 16: vane (VANE/SKY) calibration of Nod scans
    qa,
    telescopes,  # issue 14: telescope profiles
)
from calpipe.config import CalibrationConfig, InstrumentParameters
from calpipe.errors import (
    AtmosphereError,
    CalibrationError,
    LowTransmissionError,
    MetadataError,
    MissingLoadError,
)
from calpipe.l0 import CalibrationSnapshot, ScanData, check_compatible, check_has_data
from calpipe.physics import beam, gain
from calpipe.physics import flags as fl
from calpipe.physics import skydiff as sky
from calpipe.physics.atmosphere import (
    TORR_TO_HPA,
    AtmosphereResult,
    SkyInputs,
    SkyModel,
    fill_empty_pixels,
    fit_pwv,
    fit_pwv_per_off,
    observed_sky_minus_hot,
    only_off,
    pwv_error_per_on,
    pwv_per_on,
    pwv_uncertainty,
    residual_rms,
    scale_uncertainty,
    transmissions,
)
from calpipe.physics.calibrate import calibrate_full, check_usable
from calpipe.physics.loads import (
    BadChannelRule,
    CalibrationLoadFull,
    interpolate_loads,
    resolve_loads,
)
from calpipe.physics.radiometry import PhysicsConstants
from calpipe.physics.reference import (
    CHOPPED,
    PreparedData,
    check_pair_dumps,
    detect_mode,
    prepare_chopped,
    prepare_references,
    subscan_midtimes,
)
from calpipe.physics.skydiff import SkyDiffResult, SkyHistory
from calpipe.products import CalibrationResult

if TYPE_CHECKING:  # annotation only: importing it loads scipy.interpolate (~0.5 s per
    # Snakemake job that never touches a table: resolve, prepare, calibrate)
    from calpipe.atmosphere.table import AtmosphereTable

log = logging.getLogger(__name__)

__all__ = ["CalibrationResult", "ScanGeometry", "atmosphere", "calibrate", "prepare", "resolve",
           "skydiff"]


# -- instrument parameters --------------------------------------------------------------------

#: smallest accepted signal-sideband weight w_s = g_s x_s / (g_s x_s + g_i x_i): T_A* scales
#: as 1 / w_s, and a signal sideband suppressed 13 dB below the image is a misconfiguration
MIN_SIGNAL_WEIGHT = 0.05


def instrument_parameters(scan: ScanData, config: CalibrationConfig) -> InstrumentParameters:
    """g_s x_s, g_i x_i, f_eff: scan attributes first, then configuration (DESIGN 3.1);
    per-channel gains (L0 arrays, then ``sideband_gains_file``) replace the scalars.

    A value found in neither is a per-scan error naming the attribute and the config option.
    A value must be a real number (not a bool, not a string: issue 12), finite, the gains in
    [0, 1], f_eff in (0, 1], and w_s >= MIN_SIGNAL_WEIGHT.
    """
    values: dict[str, float] = {}
    source: dict[str, str] = {}
    for name in ("gs_xs", "gi_xi", "f_eff"):
        raw = scan.attrs.get(name)
        if raw is not None:
            where = "scan attributes"
        else:
            raw, where = getattr(config, name), "configuration"
        if raw is None:
            raise MetadataError(f"instrument parameter '{name}' is neither a scan attribute nor "
                                f"set in the configuration (calibration.{name})",
                                scan=scan.scan, array=f"attrs/{name}")
        if isinstance(raw, bool) or not isinstance(raw, int | float | np.integer | np.floating):
            raise MetadataError(f"instrument parameter '{name}' = {str(raw)[:80]!r} "
                                f"({type(raw).__name__}, from the {where}) is not a number",
                                scan=scan.scan, array=f"attrs/{name}")
        value = _as_float(raw)
        limit = (0 < value <= 1) if name == "f_eff" else (0 <= value <= 1)
        if not np.isfinite(value) or not limit:
            expect = "0 < f_eff <= 1" if name == "f_eff" else f"0 <= {name} <= 1"
            raise MetadataError(f"instrument parameter '{name}' = {value} (from the {where}) is "
                                f"out of range ({expect})", scan=scan.scan,
                                array=f"attrs/{name}")
        values[name], source[name] = value, where
    gains: tuple[Any, Any] = (values["gs_xs"], values["gi_xi"])
    if scan.sideband_gains is not None:  # issue 13: per channel (and pixel) from L0
        gains, source["gs_xs"] = scan.sideband_gains, "L0 source/gs_xs, gi_xi"
    elif config.sideband_gains_file is not None:
        from calpipe.sideband import gains_from_file

        nu_sig, nu_img = frequency_axes(scan)
        gains = gains_from_file(config.sideband_gains_file, nu_sig, nu_img,
                                scan.counts.shape[2], scan.counts.shape[3], scan.scan)
        source["gs_xs"] = f"file {config.sideband_gains_file}"
    else:
        total = values["gs_xs"] + values["gi_xi"]
        if total <= 0 or values["gs_xs"] / total < MIN_SIGNAL_WEIGHT:
            raise MetadataError(f"sideband gains g_s x_s = {values['gs_xs']}, g_i x_i = "
                                f"{values['gi_xi']}: the signal weight w_s = g_s x_s / "
                                f"(g_s x_s + g_i x_i) must be >= {MIN_SIGNAL_WEIGHT}",
                                scan=scan.scan, array="attrs/gs_xs")
    source["gi_xi"] = source["gs_xs"]
    return InstrumentParameters(gains[0], gains[1], values["f_eff"], source)


def frequency_axes(scan: ScanData) -> tuple[np.ndarray, np.ndarray]:
    """nu_sig, nu_img [C] (Hz); all subscans must share one frequency setup."""
    m = scan.meta
    for name in ("signal_freq", "image_freq", "freq_res", "freq_off", "ref_channel"):
        values = getattr(m, name)
        if np.ptp(values) > 1e-9 * max(abs(float(values[0])), 1.0):
            raise MetadataError(f"frequency setup changes between subscans ({values.tolist()})",
                                scan=scan.scan, array=f"source/{name}")
    return m.frequency_axes(scan.counts.shape[0])


# -- telescope profile and T_mb scale (issue 14) --------------------------------------------

def telescope_config(scan: ScanData, config: CalibrationConfig
                     ) -> tuple[CalibrationConfig, dict[str, Any] | None]:
    """The configuration completed by the scan's telescope profile (calpipe.telescopes) and
    the L1 attribute describing the profile (None when there is none)."""
    profile, source = telescopes.select(config, scan.attrs.get("telescope"))
    if profile is None:
        return config, None
    return telescopes.apply(config, profile), profile.attrs(source)


def _check_site(scan: ScanData, config: CalibrationConfig) -> None:
    """The scan's band and pressure inside its telescope profile's ranges (MetadataError)."""
    profile, _ = telescopes.select(config, scan.attrs.get("telescope"))
    if profile is None:
        return
    nu_sig, _nu_img = frequency_axes(scan)
    profile.check_scan(scan.scan, (float(np.min(nu_sig)) / 1e9, float(np.max(nu_sig)) / 1e9),
                       float(np.mean(scan.meta.pamb)) * TORR_TO_HPA)


def main_beam_scale(scan: ScanData, config: CalibrationConfig, f_eff: float,
                    elevation_on: np.ndarray, nu_sig: np.ndarray
                    ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(K[A, S_on] or None for T_A*, the L1 attribute 'scale') for the completed config."""
    if config.scale == "ta_star":
        return None, {"scale": "ta_star", "quantity": "T_A*"}
    if config.eta_mb is None:
        raise MetadataError("scale: tmb needs the main-beam efficiency eta_mb (configuration "
                            "option or telescope profile)", scan=scan.scan, array="eta_mb")
    eta_fss = f_eff if config.eta_fss is None else float(config.eta_fss)
    n_a = scan.counts.shape[3]
    curves = beam.select_curves(config.gain_curve or (), n_a,
                                float(np.median(nu_sig)) / 1e9, scan=scan.scan)
    gain = beam.elevation_gain(curves, elevation_on, scan=scan.scan)
    factor = beam.main_beam_factor(eta_fss, float(config.eta_mb), gain)
    return factor, {
        "scale": "tmb", "quantity": "T_mb",
        "formula": "T_mb = T_A* eta_fss / (eta_mb G(el)); t_sys x K, weight / K^2",
        "eta_fss": eta_fss, "eta_fss_source": "eta_fss" if config.eta_fss is not None
        else "f_eff", "eta_mb": float(config.eta_mb),
        "gain_curve": [None if c is None else list(c.coefficients) for c in curves],
        "gain": gain.tolist(), "factor": factor.tolist(),  # [A][S_on]
    }


# -- stages -----------------------------------------------------------------------------------

def resolve(scan: ScanData, cal: CalibrationSnapshot, config: CalibrationConfig,
            next_cal: CalibrationSnapshot | None = None) -> CalibrationLoadFull:
    """Stage "resolve": loads -> gamma, T_rec, bad channels (DESIGN 3.2); with
    ``gain_interpolate: 3`` also the gain drift to the next snapshot ``next_cal`` (issue 14)."""
    config, _ = telescope_config(scan, config)
    _check_site(scan, config)
    if nod.is_vane_snapshot(cal):  # chopper wheel: VANE / SKY instead of HOT / COLD
        if config.gain_interpolate:
            raise MetadataError("gain_interpolate is not available for vane (VANE/SKY) "
                                "calibration", scan=scan.scan, array="calibration/sobsmode")
        if config.calibration_select != "lloadsn":
            raise MetadataError(f"calibration_select {config.calibration_select} is not "
                                "available for vane (VANE/SKY) calibration (lloadsn only)",
                                scan=scan.scan, array="calibration/sobsmode")
        return nod.resolve_vane(scan, cal, config)
    note = None
    if next_cal is not None and (config.gain_interpolate or config.calibration_select
                                 != "lloadsn"):
        try:  # a retune (or another pixel layout) before the next loads: no bracket
            check_compatible(scan, next_cal)
        except CalibrationError as exc:
            note = (f"next calibration snapshot (scan {next_cal.scan}) not used: "
                    f"{exc.detail}")
            if config.gain_interpolate:
                raise MissingLoadError(f"gain_interpolate 3: the {note}", scan=scan.scan,
                                       array=f"calibration (of scan {next_cal.scan})") from exc
            log.warning("scan %d: %s; calibration_select %s falls back to lloadsn", scan.scan,
                        note, config.calibration_select)
            next_cal = None
    elif next_cal is None and config.calibration_select != "lloadsn":
        note = "no next calibration snapshot in the store"
    if config.calibration_select == "nearest" and next_cal is not None:
        cal = _nearest_snapshot(scan, cal, next_cal)
    load = _resolve_snapshot(scan, cal, config)
    if note is not None:
        load = dataclasses.replace(load, selection_note=note)
    if config.calibration_select == "linear" and next_cal is not None:
        return interpolate_loads(load, _resolve_snapshot(scan, next_cal, config),
                                 _snapshot_weight(scan, cal, next_cal))
    if not config.gain_interpolate:
        return load
    if next_cal is None:
        raise MissingLoadError("gain_interpolate 3 needs the next calibration snapshot",
                               scan=scan.scan, array="calibration")
    nxt = _resolve_snapshot(scan, next_cal, config)
    t0 = gain.snapshot_time(cal.meta.mjd, cal.meta.exptime, cal.counts.shape[1])
    t1 = gain.snapshot_time(next_cal.meta.mjd, next_cal.meta.exptime, next_cal.counts.shape[1])
    model = gain.gain_drift(load.gamma, nxt.gamma, load.bad_channel, nxt.bad_channel, t0, t1,
                            scan=scan.scan)
    # the HOT and COLD subscans themselves drift: resolve them again at the gain of t0 (else
    # gamma, C_hot are off by the drift between HOT and COLD, ~1e-4, amplified in the pwv fit)
    times = gain.dump_times(cal.meta.mjd, cal.meta.exptime, cal.counts.shape[1])
    steady = gain.correct_counts(cal.counts, times, model, np.arange(cal.counts.shape[4]))
    load = _resolve_snapshot(scan, dataclasses.replace(cal, counts=steady), config)
    return dataclasses.replace(load, drift_ratio=model.ratio, drift_t0_mjd=t0,
                               drift_t1_mjd=t1, drift_scan=int(next_cal.scan))


def snapshot_digests(cal: CalibrationSnapshot, next_cal: CalibrationSnapshot | None,
                     load: CalibrationLoadFull) -> dict[str, Any]:
    """The provenance of the loads: content digest and scan of the snapshot used, and of the
    next snapshot when it entered the result too (gain drift, linear selection)."""
    used = cal
    if next_cal is not None and load.cal_scan == next_cal.scan != cal.scan:
        used = next_cal  # calibration_select: nearest
    out: dict[str, Any] = {"calibration": used.content_digest,
                           "calibration_scan": int(used.scan)}
    if next_cal is not None and (load.linear_scan is not None or load.drift_scan is not None):
        out.update(next_calibration=next_cal.content_digest,
                   next_calibration_scan=int(next_cal.scan))
    return out


def _snapshot_weight(scan: ScanData, cal: CalibrationSnapshot,
                     next_cal: CalibrationSnapshot) -> float:
    """u = (t_scan - t_0) / (t_1 - t_0) with the mean dump times of the scan and of the two
    snapshots (not clipped)."""
    m = scan.meta
    t_scan = float(np.mean(gain.dump_times(m.mjd, m.exptime, scan.counts.shape[1])))
    t0 = gain.snapshot_time(cal.meta.mjd, cal.meta.exptime, cal.counts.shape[1])
    t1 = gain.snapshot_time(next_cal.meta.mjd, next_cal.meta.exptime, next_cal.counts.shape[1])
    if not t1 > t0:
        raise MetadataError(f"the next calibration snapshot (scan {next_cal.scan}, MJD "
                            f"{t1:.6f}) is not after the scan's own (MJD {t0:.6f})",
                            scan=scan.scan, array="calibration/mjd")
    return (t_scan - t0) / (t1 - t0)


def _nearest_snapshot(scan: ScanData, cal: CalibrationSnapshot,
                      next_cal: CalibrationSnapshot) -> CalibrationSnapshot:
    """Of the two snapshots the one whose mean dump time is nearer the scan's (ties: the
    scan's own lloadsn snapshot)."""
    return next_cal if _snapshot_weight(scan, cal, next_cal) > 0.5 else cal


def _resolve_snapshot(scan: ScanData, cal: CalibrationSnapshot, config: CalibrationConfig
                      ) -> CalibrationLoadFull:
    check_compatible(scan, cal)
    inst = instrument_parameters(scan, config)
    nu_sig, nu_img = frequency_axes(scan)
    load = resolve_loads(
        scan=scan.scan, cal_scan=cal.scan, counts=cal.counts, sobsmode=cal.meta.sobsmode,
        thot=cal.thot, tcold=cal.tcold, nu_sig=nu_sig, nu_img=nu_img, gs_xs=inst.gs_xs,
        gi_xi=inst.gi_xi, f_eff=inst.f_eff,
        constants=PhysicsConstants.for_mode(config.physics),
        rule=BadChannelRule(config.clip_counts, config.clip_trec, config.clip_smooth_channels),
    )
    load.check()
    return load


def _drift(load: CalibrationLoadFull) -> gain.GainDrift | None:
    if load.drift_ratio is None or load.drift_t0_mjd is None or load.drift_t1_mjd is None:
        return None
    return gain.GainDrift(load.drift_t0_mjd, load.drift_t1_mjd, load.drift_ratio)


def _drift_corrected_off(drift: gain.GainDrift, prepared: PreparedData, mjd: np.ndarray,
                         exptime: np.ndarray, n_dumps: int) -> np.ndarray:
    """off_mean [C, R, A, n_off] / r(mid-time of each OFF): the mean of r over an OFF's dumps
    is r at their mean time, r being linear in time."""
    off = prepared.off_index
    mid = np.asarray(mjd, np.float64)[off] + 0.5 * n_dumps * np.asarray(
        exptime, np.float64)[off] / 86400.0
    factor = np.moveaxis(drift.factor(mid), 0, -1)  # [R, A, n_off]
    return np.asarray(prepared.off_mean / factor[None])


def prepare(scan: ScanData, config: CalibrationConfig) -> PreparedData:
    """Stage "prepare": OFF averages and C_REF per ON subscan (DESIGN 3.4)."""
    if config.mode == "nod" or (config.mode == "auto" and nod.is_nod_scan(scan)):
        prepared = nod.prepare_nod(scan)  # BEAM1 / BEAM2: each the other's reference
        prepared.check()
        return prepared
    instmode = str(scan.attrs.get("instmode", ""))
    if detect_mode(scan.meta.sobsmode, instmode, config.mode) == CHOPPED:  # issue 14: DBS
        prepared = prepare_chopped(scan=scan.scan, counts=scan.counts,
                                   sobsmode=scan.meta.sobsmode, mjd=scan.meta.mjd,
                                   exptime=scan.meta.exptime)
    else:
        prepared = prepare_references(
            scan=scan.scan, counts=scan.counts, sobsmode=scan.meta.sobsmode, mjd=scan.meta.mjd,
            exptime=scan.meta.exptime, instmode=instmode, mode=config.mode,
            method=config.reference,
        )
    scan.require_subscans(prepared.off_index, "prepare")
    check_has_data(scan.scan, scan.subscan_valid, prepared.off_index.tolist(),
                   what="OFF subscan ")
    prepared.check()
    return prepared


@dataclass(frozen=True)
class ScanGeometry:
    """The few per-subscan values the atmosphere stage needs (so it need not read L0)."""

    scan: int
    elevation: np.ndarray  # [S] rad
    tamb: np.ndarray  # [S] K
    pamb: np.ndarray  # [S] Torr
    mjd: np.ndarray  # [S] subscan start (issue 14: gain drift at the OFFs)
    exptime: np.ndarray  # [S] s per dump
    n_dumps: int
    frontend_backends: np.ndarray  # [S] str (issue 14: the SKYDIFF layout of each OFF)

    @classmethod
    def of(cls, scan: ScanData) -> ScanGeometry:
        m = scan.meta
        return cls(scan.scan, m.elevation.copy(), m.tamb.copy(), m.pamb.copy(),
                   np.asarray(m.mjd, np.float64).copy(), np.asarray(m.exptime).copy(),
                   int(scan.counts.shape[1]),
                   np.asarray([str(x) for x in scan.frontend_backends], dtype=str))


@dataclass(frozen=True)
class SkySlabs:
    """The atmosphere model of one scan: slabs at the OFFs (fit) and at the ONs (tr)."""

    sig_off: Any
    img_off: Any
    sig_on: Any
    img_on: Any
    use_model: bool
    t_atm_source: str  # "model(A, T_ground)" | "model" (zenith T_atm) | "ambient"
    model: str
    digest: str
    note: str = ""


_WARNED: set[tuple[str, str]] = set()


def _warn_once(key: tuple[str, str], text: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(text)


def _pressure_correction(sky_table: Any, table: AtmosphereTable, nu: np.ndarray,
                         pressure_hpa: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(tau_z(P) - tau_z(P0), 0) [pwv nodes, C] from the zenith table, for a single-pressure
    sky table (node P0) used at P; None when not needed.

    Only tau is corrected: the zenith table's T_atm change with P follows the AFGL ground
    temperature of each pressure, while the sky table is evaluated at the observed T_g;
    correcting T_atm too was measured 10-20x worse (docs/atmosphere.md section 9)."""
    if not sky_table.needs_pressure_correction(pressure_hpa):
        return None
    p0 = float(sky_table.pressure_hpa[0])
    at_p, at_0 = table.slab(nu, pressure_hpa), table.slab(nu, p0)
    dtau = [at_p.evaluate(float(w))[0] - at_0.evaluate(float(w))[0] for w in sky_table.pwv_mm]
    return np.asarray(dtau), np.zeros((len(dtau), np.size(nu)))


def sky_slabs(table: AtmosphereTable, config: CalibrationConfig, nu_sig: np.ndarray,
              nu_img: np.ndarray, pressure_hpa: float, el_off: np.ndarray,
              tamb_off: np.ndarray, el_on: np.ndarray, tamb_on: np.ndarray,
              scan: int | None = None) -> SkySlabs:
    """Choose the sky model (issue 13) and interpolate it once for the scan.

    ``sky_model: auto`` with ``t_atm: model``: a sky table covering the signal and image
    frequencies and the pressure (shipped / ``sky_table_dir``; built with am when
    ``sky_table_build``) gives T_atm at each subscan's airmass and ground temperature
    (``tamb``); the shipped sky tables only when ``table`` is the shipped am table.
    Otherwise the zenith ``table``, with a warning naming the approximation.
    """
    from calpipe.physics.atmosphere import airmass

    note = ""
    if config.sky_model == "auto" and config.t_atm == "model":
        from calpipe.atmosphere.skyio import (
            build_for_tuning,
            default_table_digest,
            find_sky_table,
        )

        # the shipped sky tables refine the shipped am table; a zenith table of the user's
        # own (another site or model) is respected unless sky_table_dir holds a sky table
        shipped = table.digest == default_table_digest()
        found = find_sky_table(nu_sig, nu_img, pressure_hpa, config.sky_table_dir,
                               shipped=shipped)
        if found is None and config.sky_table_build:
            found = build_for_tuning(nu_sig, nu_img, pressure_hpa, config.sky_table_dir)
        if found is not None:
            sky_table, path = found
            try:
                corr = {id(nu): _pressure_correction(sky_table, table, nu, pressure_hpa)
                        for nu in (nu_sig, nu_img)}
                return SkySlabs(
                    sky_table.slab(nu_sig, pressure_hpa, airmass(el_off), tamb_off,
                                   corr[id(nu_sig)]),
                    sky_table.slab(nu_img, pressure_hpa, airmass(el_off), tamb_off,
                                   corr[id(nu_img)]),
                    sky_table.slab(nu_sig, pressure_hpa, airmass(el_on), tamb_on,
                                   corr[id(nu_sig)]),
                    sky_table.slab(nu_img, pressure_hpa, airmass(el_on), tamb_on,
                                   corr[id(nu_img)]),
                    True, sky_table.t_atm_source, f"{sky_table.model} sky table {path.name}",
                    sky_table.digest)
            except CalibrationError as exc:  # airmass / tamb outside the table
                note = f"sky table {path.name} not used: {exc}"
                log.warning("scan %s: %s; zenith table instead", scan, note)
    try:
        slabs = [table.slab(nu, pressure_hpa) for nu in (nu_sig, nu_img)]
    except CalibrationError as exc:
        raise AtmosphereError(exc.detail, scan=scan, array="atmosphere table") from exc
    use_model = config.t_atm == "model" and table.t_atm is not None
    if table.t_atm is None:
        _warn_once((table.digest, "linear"), (
            f"atmosphere table {table.model} has no T_atm (CCAT linear form): T_atm = T_amb, "
            "the isothermal approximation (T_A* biased by -4 to -24 % at 460-850 GHz and low "
            "elevation, docs/atmosphere.md section 10)"))
    elif not use_model:
        _warn_once((table.digest, "ambient"), (
            "t_atm: ambient: T_atm = T_amb, the isothermal approximation (T_A* biased by -4 "
            "to -24 % at 460-850 GHz and low elevation, docs/atmosphere.md section 10)"))
    elif float(np.max(nu_sig)) > 400e9:
        _warn_once((table.digest, "zenith"), (
            f"no sky table covers {float(np.median(nu_sig)) / 1e9:.3f} GHz: the zenith T_atm of "
            f"{table.model} is used at every airmass and for the table's fixed ground "
            "temperature (T_A* biased by up to 4-50 % at 460-850 GHz and low elevation, "
            "docs/atmosphere.md section 10); set sky_table_build: true to build one"))
    source = "model" if use_model else "ambient"
    return SkySlabs(slabs[0], slabs[1], slabs[0], slabs[1], use_model, source, table.model,
                    table.digest, note)


def atmosphere(geometry: ScanGeometry, load: CalibrationLoadFull, prepared: PreparedData,
               config: CalibrationConfig, table: AtmosphereTable) -> AtmosphereResult:
    """Stage "atmosphere": pwv (fit or fixed), tau and transmissions (DESIGN 3.3)."""
    if prepared.mode == "nod":  # vane calibration: T_cal carries the atmosphere
        return nod.vane_atmosphere(geometry.scan, geometry.pamb, load, prepared)
    scan = geometry.scan
    off, on = prepared.off_index, prepared.on_index
    pressure_hpa = float(np.mean(geometry.pamb[off])) * TORR_TO_HPA
    constants = PhysicsConstants.for_mode(config.physics)
    slabs = sky_slabs(table, config, load.nu_sig, load.nu_img, pressure_hpa,
                      geometry.elevation[off], geometry.tamb[off], geometry.elevation[on],
                      geometry.tamb[on], scan=scan)
    slab_sig, slab_img, use_model = slabs.sig_off, slabs.img_off, slabs.use_model
    sky = SkyInputs(load.nu_sig, load.nu_img, load.w_s, load.f_eff, config.t_cmb, constants)
    model = SkyModel(sky, slab_sig, slab_img, geometry.elevation[off], geometry.tamb[off],
                     use_model)
    off_mean = prepared.off_mean
    drift = _drift(load)
    if drift is not None:  # issue 14: the OFFs at the gain of the load snapshot
        off_mean = _drift_corrected_off(drift, prepared, geometry.mjd, geometry.exptime,
                                        geometry.n_dumps)
    s_obs, weight = observed_sky_minus_hot(off_mean, load.c_hot, load.gamma,
                                           load.bad_channel)
    n_used = int((weight > 0).any(axis=3).sum())
    rp, ap = (load.gamma.shape[1], load.gamma.shape[2]) if config.pwv_per_pixel else (1, 1)
    method, message, converged, iterations = "fit", "", True, 0
    grid: dict[str, Any] = {"grid_min": config.pwv_grid_min_mm, "grid_max": config.pwv_grid_max_mm,
            "grid_points": config.pwv_grid_points, "max_iter": config.pwv_newton_max_iter,
            "tol": config.pwv_newton_tol}
    pwv_off: np.ndarray | None = None  # [Rp, Ap, K]: the per-pair fit (issue 14)
    notes = ""
    if config.pwv_fixed_mm is not None:
        method, converged = "fixed", False  # no fit ran
        pwv = np.full((rp, ap), float(config.pwv_fixed_mm))
        rms = np.array([[residual_rms(model, s_obs, weight, load.t_hot_eff, float(pwv[0, 0]))]])
        rms = np.broadcast_to(rms, (rp, ap)).copy()
    else:
        if n_used == 0:
            raise AtmosphereError("no good channel in any OFF subscan to fit pwv", scan=scan,
                                  array="source/data_5d")
        try:
            if config.pwv_per_pair:
                fit = fit_pwv_per_off(scan=scan, model=model, s_obs=s_obs, weight=weight,
                                      t_hot_eff=load.t_hot_eff, per_pixel=config.pwv_per_pixel,
                                      off_subscans=off, **grid)
                pwv_off, rms = fit.pwv_mm, fit.residual_rms_k
                notes = fit_notes(fit.n_filled, fill_empty_pixels(scan, pwv_off))
                pwv, converged, iterations = pwv_off.mean(axis=-1), fit.converged, fit.n_iterations
            else:
                pwv, rms, converged, iterations = fit_pwv(
                    scan=scan, model=model, s_obs=s_obs, weight=weight,
                    t_hot_eff=load.t_hot_eff, per_pixel=config.pwv_per_pixel,
                    allow_empty_pixels=config.pwv_per_pixel, **grid)
                notes = fit_notes(0, fill_empty_pixels(scan, pwv))
        except AtmosphereError as exc:
            if config.pwv_fallback_mm is None:
                raise
            log.warning("scan %d: %s; using the fallback pwv %.3f mm", scan, exc.detail,
                        config.pwv_fallback_mm)
            method, message, converged = "fallback", exc.detail, False
            pwv, pwv_off = np.full((rp, ap), float(config.pwv_fallback_mm)), None
            rms = np.full((rp, ap), residual_rms(model, s_obs, weight, load.t_hot_eff,
                                                 float(config.pwv_fallback_mm)))
    # per pair: each ON at the pwv of its reference, interpolated like the reference counts
    pwv_on = (None if pwv_off is None else
              pwv_per_on(pwv_off, prepared.ref_lo, prepared.ref_hi, prepared.ref_weight))
    # QA (issue 8): compact fit diagnostic for the quick-look, stored in L1
    fit_obs, fit_mod = qa.atmosphere_fit_diagnostic(model, s_obs, weight, load.t_hot_eff,
                                                    pwv if pwv_off is None else pwv_off)
    pwv_used = pwv if pwv_on is None else pwv_on
    try:
        tau_s, tr_s = transmissions(slabs.sig_on, pwv_used, geometry.elevation[on])
        tau_i, tr_i = transmissions(slabs.img_on, pwv_used, geometry.elevation[on])
    except CalibrationError as exc:
        raise AtmosphereError(exc.detail, scan=scan, array="pwv") from exc
    # uncertainties (issue 13): absolute radiometer weights of S_obs, 1/sigma^2 =
    # dnu t_off / T_total^2 (the fit's relative weight is 1 / T_total^2)
    pwv_err = np.full((rp, ap), np.nan)
    pwv_on_err: np.ndarray | None = None
    if method == "fit" and load.nu_sig.size > 1:
        dnu = float(np.abs(np.diff(load.nu_sig)).mean())
        abs_weight = weight * dnu * prepared.off_time_s
        if pwv_off is None:
            pwv_err, _ = pwv_uncertainty(model, s_obs, abs_weight, load.t_hot_eff, pwv,
                                         config.pwv_per_pixel)
        else:  # each OFF's fit alone; the ON errors as interpolated
            err_off = np.stack([pwv_uncertainty(model, s_obs, only_off(abs_weight, k),
                                                load.t_hot_eff, pwv_off[..., k],
                                                config.pwv_per_pixel)[0]
                                for k in range(off.size)], axis=-1)
            pwv_on_err = pwv_error_per_on(err_off, prepared.ref_lo, prepared.ref_hi,
                                          prepared.ref_weight)
            pwv_err = pwv_on_err.mean(axis=-1)
    elif pwv_on is not None:
        pwv_on_err = np.full(pwv_on.shape, np.nan)
    if pwv_on is not None:
        pwv = pwv_on.mean(axis=-1)  # the scan's summary: the mean over the ONs
    scale_err = scale_uncertainty(slabs.sig_on, pwv_used,
                                  pwv_err if pwv_on_err is None else pwv_on_err,
                                  geometry.elevation[on])
    result = AtmosphereResult(
        scan=scan, method=method, per_pixel=config.pwv_per_pixel, pwv_mm=pwv,
        tau_signal=tau_s, tau_image=tau_i, tr_signal=tr_s, tr_image=tr_i,
        residual_rms_k=rms, converged=bool(converged), n_channels=n_used,
        n_iterations=int(iterations), pressure_hpa=pressure_hpa,
        t_atm_source=slabs.t_atm_source, table_model=slabs.model,
        table_digest=slabs.digest,
        message="; ".join(x for x in (message, notes, slabs.note) if x), fit_observed_k=fit_obs,
        fit_model_k=fit_mod, pwv_err_mm=pwv_err, scale_uncertainty=scale_err,
        per_pair=pwv_on is not None, pwv_off_mm=pwv_off, pwv_on_mm=pwv_on,
        pwv_on_err_mm=pwv_on_err,
    )
    result.check()
    return result


def skydiff(load: CalibrationLoadFull, prepared: PreparedData, geometry: ScanGeometry,
            history: SkyHistory, config: CalibrationConfig
            ) -> tuple[SkyHistory, SkyDiffResult]:
    """Stage "skydiff" (issue 14, ``skydiff: N`` > 0; calpipe.physics.skydiff): S_obs of every
    OFF of the scan, differenced against the N most recent previous OFFs of its layout; returns
    the updated history and the scan's differences. Nod scans (no OFF subscan: each beam is
    the other's reference) add nothing."""
    n = int(config.skydiff)
    c, r, a = load.gamma.shape
    if prepared.mode == "nod":
        return sky.update(history, load.scan, np.zeros((c, r, a, 0)), [], np.zeros(0, int),
                          np.zeros(0), n)
    off = prepared.off_index
    s_obs = sky.observed_sky(prepared.off_mean, load.c_hot, load.gamma, load.bad_channel)
    mid = subscan_midtimes(geometry.mjd[off], geometry.exptime[off].astype(np.float64),
                           geometry.n_dumps)
    keys = [sky.layout_key(load.nu_sig, r, a, str(geometry.frontend_backends[k]))
            for k in off.tolist()]
    return sky.update(history, load.scan, s_obs, keys, off.astype(np.int64), mid, n)


def calibrate(scan: ScanData, load: CalibrationLoadFull, prepared: PreparedData,
              atm: AtmosphereResult, config: CalibrationConfig | None = None,
              skydiff: SkyDiffResult | None = None) -> CalibrationResult:
    """Stage "calibrate": T_A*, t_sys, weight, flags (DESIGN 3.5) plus the L1 coordinates;
    with ``skydiff`` (the scan's SKYDIFF differences, issue 14) also those."""
    config = CalibrationConfig() if config is None else config
    config, profile_attrs = telescope_config(scan, config)
    on = prepared.on_index
    scan.require_subscans(prepared.read_index, "calibrate")
    check_pair_dumps(scan.scan, scan.counts, prepared)  # otf-chopped: both phases of a dump
    if prepared.mode == "nod":  # T_sys (ON - REF) / REF with the vane T_sys (calpipe.nod)
        if _drift(load) is not None:
            raise MetadataError("gain_interpolate is not available for Nod scans",
                                scan=scan.scan, array="source/sobsmode")
        arrays = nod.calibrate_nod_arrays(scan, load, prepared)
    else:
        counts, on_index, c_ref = scan.counts, on, prepared.c_ref
        ref_index = prepared.ref_per_dump  # otf-chopped: dump d of the chop partner
        drift = _drift(load)
        if drift is not None:  # issue 14: ON and OFF counts at the gain of the load snapshot
            n_d = scan.counts.shape[1]
            sel = prepared.read_index  # the ONs (and their per-dump references)
            times = gain.dump_times(scan.meta.mjd[sel], scan.meta.exptime[sel], n_d)
            counts = gain.correct_counts(scan.counts[..., sel], times, drift,
                                         np.arange(sel.size))
            on_index = np.searchsorted(sel, on)
            if ref_index is not None:
                ref_index = np.searchsorted(sel, ref_index)
            off_mean = _drift_corrected_off(drift, prepared, scan.meta.mjd, scan.meta.exptime,
                                            n_d)
            w = prepared.ref_weight
            c_ref = (off_mean[..., prepared.ref_lo] * (1.0 - w)
                     + off_mean[..., prepared.ref_hi] * w)
        arrays = calibrate_full(
            counts, on_index, c_ref, load.gamma, load.bad_channel, load.w_s,
            load.f_eff, atm.tr_signal, float(scan.meta.freq_res[0]), scan.meta.exptime[on],
            ref_factor=prepared.reference_variance_factor(), ref_index=ref_index,
            noise_bandwidth_factor=config.noise_bandwidth_factor,
            min_transmission=config.min_transmission,
            blank_low_transmission=config.blank_low_transmission,
        )
        _check_transmission(scan.scan, load, atm, config)
    check_usable(scan.scan, arrays.spectra, arrays.flags)  # issue 12: no all-NaN "success"
    m = scan.meta
    factor, scale_attrs = main_beam_scale(scan, config, load.f_eff, m.elevation[on],
                                          load.nu_sig)
    if factor is not None:  # issue 14: T_mb scale
        spectra, t_sys, weight = beam.scale_arrays(arrays.spectra, arrays.t_sys,
                                                   arrays.weight, factor)
        arrays = dataclasses.replace(arrays, spectra=spectra, t_sys=t_sys, weight=weight)
    n_d = scan.counts.shape[1]
    mjd = m.mjd[on][None, :] + np.arange(n_d)[:, None] * m.exptime[on][None, :] / 86400.0
    squeeze = not atm.per_pixel

    def atm_array(a: np.ndarray) -> np.ndarray:  # [C, 1, 1(, S)] -> [C(, S)] in joint mode
        return (a[:, 0, 0] if squeeze else a).astype(np.float32)

    attrs = _scan_attrs(scan, load, prepared, atm, arrays.t_sys)
    attrs["scale"] = scale_attrs
    if load.drift_ratio is not None:
        attrs["gain_drift"] = {"gain_interpolate": 3, "next_calibration_scan": load.drift_scan,
                               "t0_mjd": load.drift_t0_mjd, "t1_mjd": load.drift_t1_mjd,
                               "gamma_ratio": np.asarray(load.drift_ratio).tolist()}
    if profile_attrs is not None:
        attrs["telescope_profile"] = profile_attrs
    if prepared.mode == "nod":
        attrs["nod"] = nod.nod_attrs(scan, load, prepared, arrays)
    if prepared.beam is not None:  # issue 14: otf-chopped, beams A and B
        attrs["dbs"] = dbs.dbs_attrs(prepared, config.dbs_merge)
    no_fit = np.full((arrays.t_sys.shape[0], prepared.off_index.size), np.nan)
    fit_obs = no_fit if atm.fit_observed_k is None else atm.fit_observed_k
    fit_mod = no_fit if atm.fit_model_k is None else atm.fit_model_k
    if skydiff is not None:
        attrs["skydiff"] = {"depth": skydiff.depth, "n_diffs": skydiff.n_diffs,
                            "formula": sky.FORMULA}
    result = CalibrationResult(
        **_skydiff_fields(skydiff),
        scan=scan.scan, mode=prepared.mode, spectra=arrays.spectra, flags=arrays.flags,
        t_sys=arrays.t_sys, weight=arrays.weight, t_rec=load.t_rec.astype(np.float32),
        gamma=load.gamma.astype(np.float32), tau_signal=atm_array(atm.tau_signal),
        tau_image=atm_array(atm.tau_image), tr_signal=atm_array(atm.tr_signal),
        tr_image=atm_array(atm.tr_image), frequency_signal=load.nu_sig.astype(np.float64),
        frequency_image=load.nu_img.astype(np.float64), mjd=mjd,
        otf_lon=scan.otf_lon[:, on].astype(np.float64),
        otf_lat=scan.otf_lat[:, on].astype(np.float64),
        elevation=m.elevation[on].astype(np.float32), azimuth=m.azimuth[on].astype(np.float32),
        exptime=m.exptime[on].astype(np.float32),
        pixel_offset_lon=scan.pixel_offset_lon[..., on].astype(np.float64),
        pixel_offset_lat=scan.pixel_offset_lat[..., on].astype(np.float64),
        atm_fit_observed_k=np.asarray(fit_obs, dtype=np.float32),
        atm_fit_model_k=np.asarray(fit_mod, dtype=np.float32),
        attrs=attrs,
        scale_uncertainty=(None if atm.scale_uncertainty is None
                           else atm_array(atm.scale_uncertainty)),
    )
    if prepared.beam is not None and config.dbs_merge:  # issue 14: (T_A + T_B) / 2
        result = dbs.merge_result(result, prepared)
        # the merge ORs the flags of a pair: a scan usable per beam may not be merged
        check_usable(scan.scan, result.spectra, result.flags)
    # QA (issue 8, calpipe.qa) on the spectra as written (after a DBS merge): sets
    # TSYS_OUTLIER in result.flags, metrics -> attrs["qa"]
    blank_bits = fl.BLANKING | (fl.LOW_TRANSMISSION if config.blank_low_transmission else 0)
    result.attrs["qa"].update(qa.assess_scan(result.spectra, result.flags, result.t_sys,
                                             result.weight, atm.residual_rms_k, blank_bits))
    return result


def _skydiff_fields(result: SkyDiffResult | None) -> dict[str, Any]:
    """The CalibrationResult fields of the SKYDIFF differences (none when there are none)."""
    if result is None or result.n_diffs == 0:
        return {}
    return {"skydiff": result.diff.astype(np.float32),
            "skydiff_current_scan": result.current_scan.astype(np.int32),
            "skydiff_current_off": result.current_off.astype(np.int32),
            "skydiff_current_mjd": result.current_mjd.astype(np.float64),
            "skydiff_ref_scan": result.ref_scan.astype(np.int32),
            "skydiff_ref_off": result.ref_off.astype(np.int32),
            "skydiff_ref_mjd": result.ref_mjd.astype(np.float64)}


def _check_transmission(scan: int, load: CalibrationLoadFull, atm: AtmosphereResult,
                        config: CalibrationConfig) -> None:
    """LowTransmissionError when blanking leaves no usable (channel, pixel, ON subscan)."""
    if not config.blank_low_transmission or config.min_transmission <= 0:
        return
    ok = np.broadcast_to(atm.tr_signal >= config.min_transmission,
                         load.gamma.shape + atm.tr_signal.shape[-1:])
    if not np.any(ok & ~load.bad_channel[..., None]):
        tr = float(np.nanmax(atm.tr_signal))
        raise LowTransmissionError(
            f"no usable channel: the signal transmission at the ON elevations is at most "
            f"{tr:.3g} (< min_transmission = {config.min_transmission:g}; pwv "
            f"{float(np.max(atm.pwv_mm)):.3g} mm)", scan=scan, array="tr_signal")


def _median_per_pixel(values: np.ndarray) -> list[list[float | None]]:
    """nanmedian over all axes but (R, A) -> nested list (None where no finite value)."""
    r, a = values.shape[1], values.shape[2]
    flat = np.moveaxis(values, (1, 2), (0, 1)).reshape(r, a, -1)
    out: list[list[float | None]] = []
    for i in range(r):
        row: list[float | None] = []
        for j in range(a):
            v = flat[i, j][np.isfinite(flat[i, j])]
            row.append(float(np.median(v)) if v.size else None)
        out.append(row)
    return out


def _as_float(raw: Any) -> float:
    """float(raw), inf for an integer too large for a float (JSON ints are unbounded)."""
    try:
        return float(raw)
    except OverflowError:
        return float("inf")


def _optional_number(scan: ScanData, name: str) -> float | None:
    """A numeric scan attribute, None when absent. Issue 6: a non-numeric value (e.g. a
    string) used to raise a bare ValueError from float(), which stopped the whole run; it is
    a per-scan data problem. Issue 12: only a real, finite number is one (a bool or a numeric
    string is not)."""
    raw = scan.attrs.get(name)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | np.integer | np.floating) \
            or not np.isfinite(_as_float(raw)):
        raise MetadataError(f"scan attribute '{name}' = {str(raw)[:80]!r} is not a number",
                            scan=scan.scan, array=f"attrs/{name}")
    return _as_float(raw)


def _gain_attr(value: Any) -> Any:
    """A scalar gain as is; a per-channel array as a summary (the array is in the L0 store or
    the named calibration file)."""
    if np.ndim(value) == 0:
        return float(value)
    v = np.asarray(value, dtype=np.float64)
    return {"per_channel": True, "shape": list(v.shape), "min": float(v.min()),
            "median": float(np.median(v)), "max": float(v.max())}


def _nan_stat(func: Any, values: np.ndarray | None) -> float | None:
    """func over the finite values, None when there are none."""
    if values is None or not np.isfinite(values).any():
        return None
    return float(func(values[np.isfinite(values)]))


def _selection_attrs(load: CalibrationLoadFull) -> dict[str, Any] | None:
    """The L1 attribute ``calibration_select``: the linear interpolation used, or why a
    requested nearest / linear selection fell back to the lloadsn snapshot; None otherwise."""
    if load.linear_scan is not None:
        return {"method": "linear", "scans": [int(load.cal_scan), int(load.linear_scan)],
                "weight": load.linear_weight}
    if load.selection_note is not None:
        return {"method": "lloadsn", "note": load.selection_note}
    return None


def fit_notes(n_filled_offs: int, empty_pixels: list[tuple[int, int]]) -> str:
    """What the per-pixel / per-pair fit filled in (the L1 attribute atmosphere_fit.message)."""
    out = []
    if n_filled_offs:
        out.append(f"per-pair fit: {n_filled_offs} (pixel, OFF) without data, pwv interpolated "
                   "from the pixel's other OFFs")
    if empty_pixels:
        names = ", ".join(f"(r={r}, a={a})" for r, a in empty_pixels)
        out.append(f"pixel(s) {names} without data in any OFF: pwv = the median of the other "
                   "pixels")
    return "; ".join(out)


def _pixel_list(values: np.ndarray | None, per_pixel: bool) -> Any:
    """[Rp, Ap, N] -> a list over N (joint fit) or nested [R][A][N] lists (NaN -> None);
    None stays None."""
    if values is None:
        return None
    if not per_pixel:
        return [_json_number(x) for x in values[0, 0]]
    return [[[_json_number(x) for x in pix] for pix in row] for row in values]


def _json_number(x: Any) -> float | None:
    return float(x) if np.isfinite(x) else None


def _shared_fraction(scan: ScanData, prepared: PreparedData) -> np.ndarray:
    """rho[S_on] = shared / (1 / t_on + ref_factor); shared = ref_factor for a dump-averaged
    reference, 0 for a per-dump one (otf-chopped)."""
    ref = prepared.reference_variance_factor()
    t_on = scan.meta.exptime[prepared.on_index].astype(np.float64)
    return np.asarray(prepared.shared_variance_factor() / (1.0 / t_on + ref))


def _scan_attrs(scan: ScanData, load: CalibrationLoadFull, prepared: PreparedData,
                atm: AtmosphereResult, t_sys: np.ndarray) -> dict[str, Any]:
    a = scan.attrs
    pwv = atm.pwv_mm
    return {
        "scan_number": int(scan.scan),
        "source": str(a.get("source", "")),
        "mode": prepared.mode,
        "line": str(a.get("line", "")),
        "rest_freq_hz": _optional_number(scan, "rest_freq_hz"),
        "telescope": str(a.get("telescope", "")),
        "date_obs": str(a.get("date_obs", "")),
        "pwv_mm": float(pwv[0, 0]) if not atm.per_pixel else pwv.tolist(),
        "pwv_err_mm": (None if atm.pwv_err_mm is None else float(atm.pwv_err_mm[0, 0])
                       if not atm.per_pixel else atm.pwv_err_mm.tolist()),
        "atmosphere_fit": {
            "method": atm.method,
            "per_pixel": atm.per_pixel,
            # issue 14: per-pair fit, pwv per OFF and per ON ([R][A][K] lists per pixel)
            "per_pair": atm.per_pair,
            "pwv_off_mm": _pixel_list(atm.pwv_off_mm, atm.per_pixel),
            "pwv_on_mm": _pixel_list(atm.pwv_on_mm, atm.per_pixel),
            "pwv_on_err_mm": _pixel_list(atm.pwv_on_err_mm, atm.per_pixel),
            "residual_rms_k": atm.residual_rms_k.tolist(),
            "converged": atm.converged,
            "n_channels": atm.n_channels,
            "n_iterations": atm.n_iterations,
            "pressure_hpa": atm.pressure_hpa,
            "t_atm": atm.t_atm_source,
            "message": atm.message,
            # issue 13: pwv 1-sigma and the fractional T_A* scale error it causes
            "pwv_err_mm": None if atm.pwv_err_mm is None else atm.pwv_err_mm.tolist(),
            "scale_uncertainty_median": _nan_stat(np.nanmedian, atm.scale_uncertainty),
            "scale_uncertainty_max": _nan_stat(np.nanmax, atm.scale_uncertainty),
        },
        "reference": {"method": prepared.method, "on_index": prepared.on_index.tolist(),
                      "off_index": prepared.off_index.tolist(),
                      "weight": prepared.ref_weight.tolist(),
                      "t_lo_s": prepared.t_lo.tolist(), "t_hi_s": prepared.t_hi.tolist(),
                      # share of a dump's variance common to all dumps of its ON (the
                      # interpolated reference): var(D-dump mean) = (1/D + rho (1 - 1/D)) / w
                      "shared_variance_fraction": _shared_fraction(scan, prepared).tolist()},
        "calibration_scan": int(load.cal_scan),
        # issue 14: calibration_select (linear: the loads interpolated between two snapshots)
        "calibration_select": _selection_attrs(load),
        "instrument": {"gs_xs": _gain_attr(load.gs_xs), "gi_xi": _gain_attr(load.gi_xi),
                       "f_eff": load.f_eff, "w_s": _gain_attr(load.w_s),
                       "t_hot_k": load.t_hot, "t_cold_k": load.t_cold},
        "median_t_rec_k": _median_per_pixel(load.t_rec),
        "median_t_sys_k": _median_per_pixel(t_sys),
        "qa": {"bad_channel_fraction": float(load.bad_channel.mean())},
        "passthrough": {k: v for k, v in a.items()
                        if k in ("obs_id", "mission_id", "plan_id", "aor_id", "aot_id")},
        # issue 15: pixel / backend ids of the ON subscans (L1 coordinates pixel_id and
        # frontend_backend, calpipe.l1.pixel_ids)
        "frontend_backends": [str(x) for x in scan.frontend_backends[prepared.on_index]],
    }
