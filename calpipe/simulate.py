"""Synthetic L0 sessions from the forward model of DESIGN section 3 (DESIGN 5).

Per channel c, pixel (r, a), subscan s at time t (w_s = g_s x_s / (g_s x_s + g_i x_i)):
  load X:  C_X   = g(t) [T'_rec + T'_X]               T'_X = w_s J(nu_s, T_X) + w_i J(nu_i, T_X)
  OFF:     C_OFF = g(t) [T'_rec + T'_sky(el_s)]
  ON:      C_ON  = g(t) [T'_rec + T'_sky(el_s) + w_s f_eff tr_s(el_s) T_A*]
with T'_rec = w_s T_rec,SSB, g(t) = gamma (1 + drift (t - t_load)) and T'_sky from the
atmosphere table (calpipe.physics.atmosphere.SkyModel, the same code the fit uses).
Radiometer noise per dump: sigma_C = C / sqrt(freq_res * exptime). Counts are rounded to int32.

Within a scan the elevation and ambient conditions are constant (the track moves between
scans), so a noise-free session is exactly invertible. The truth (T_A*, T_rec, gamma, pwv,
instrument parameters) goes to a sibling store ``<out>.truth.zarr`` (see docs/simulation.md).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calpipe.l0 import FILL_VALUE, scan_group_name
from calpipe.physics.atmosphere import TORR_TO_HPA, SkyInputs, SkyModel
from calpipe.physics.radiometry import (
    EXACT,
    as_cube,
    sideband_weighted,
    signal_weight,
    weight_cube,
)

log = logging.getLogger(__name__)

MAX_COUNTS = 1.8e9  # stay clear of int32 max (2.147e9) with noise


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a synthetic session (all documented in docs/simulation.md)."""

    seed: int = 1
    n_scans: int = 12  # total, calibration-only load scans included
    load_every: int = 6  # a load scan, then load_every - 1 science scans
    first_scan: int = 1000
    modes: tuple[str, ...] = ("tp", "otf")  # science scans cycle through these
    n_channels: int = 2048
    n_dumps: int = 10
    n_receivers: int = 2
    n_arrays: int = 4
    n_on_tp: int = 2  # TP: OFF ON OFF ON OFF
    n_on_otf: int = 3  # OTF: OFF ON ON ON OFF; otf-chopped: rows per beam
    frequency_ghz: float = 230.538  # signal sky frequency at the reference channel
    if_ghz: float = 6.0  # image = signal - 2 IF
    bandwidth_ghz: float = 1.0
    freq_off_hz: float = 0.0
    sideband: str = "dsb"  # dsb: g_s x_s = g_i x_i = 0.5; 2sb: 0.95 / 0.05
    f_eff: float = 0.95
    # issue 13: IF-dependent sideband ratio g_i x_i / g_s x_s = nominal x (1 + slope x) with
    # x = (c - ref) / C in [-0.5, 0.5], times (1 + pixel_spread x q(r, a)), q in [-1, 1];
    # non-zero values write the per-channel gains to source/gs_xs, source/gi_xi
    sideband_ratio_slope: float = 0.0
    sideband_ratio_pixel_spread: float = 0.0
    pwv_mm: float = 1.0
    # issue 14 (per-pair atmosphere): pwv changes linearly in time, pwv(t) = pwv_mm + rate x
    # (t - mjd_start) in hours, each subscan at the pwv of its mid-time
    pwv_rate_mm_per_hour: float = 0.0
    elevation_start_deg: float = 60.0
    elevation_end_deg: float = 40.0
    pamb_hpa: float = 550.0
    tamb_k: float = 270.0
    tamb_step_k: float = 0.0  # tamb of scan i = tamb_k + i x tamb_step_k (constant in a scan)
    thot_k: float = 293.0
    tcold_k: float = 80.0
    t_rec_k: float = 80.0  # SSB receiver temperature at band centre
    exptime_s: float = 0.5
    noise: bool = True
    gain_drift_per_hour: float = 0.0  # fractional gain change per hour since the load scan
    # True: the drift restarts at every load scan (a sawtooth); False: it runs from mjd_start
    # through the whole session, so consecutive load scans see it (issue 14 item 2)
    gain_drift_reset: bool = True
    # fractional receiver-temperature change per hour since mjd_start, every dump at its own
    # T_rec (issue 14: calibration_select: linear interpolates T_rec between snapshots)
    t_rec_drift_per_hour: float = 0.0
    fill_fraction: float = 0.0  # fraction of ON dump spectra replaced by the int32 fill value
    dead_channels: int = 0  # channels per pixel with constant counts (bad: HOT == COLD)
    line_peak_k: float = 2.0  # T_A* peak of the line (K)
    line_width_channels: float = 20.0
    own_calibration: tuple[int, ...] = ()  # science scan indices that carry their own loads
    zarr_format: int = 3
    write_truth: bool = True
    scan_seconds: float = 120.0
    mjd_start: float = 61000.0
    # issue 14: the scan attribute 'telescope', and the main-beam scale of the truth: with
    # eta_mb < 1 or gain_curves, the truth store also holds t_mb = T_A* f_eff / (eta_mb
    # G_a(el)), G_a(el) = sum_k gain_curves[a or 0][k] el_deg^k (one curve, or one per array)
    telescope: str = "FYST (simulated)"
    # issue 14 (SKYDIFF): a standing wave added to the sky of every source subscan, constant
    # within a scan and growing with the scan's start time: sky_ripple_k_per_hour x hours
    # since mjd_start x sin(2 pi sky_ripple_periods c / C) K (ON - OFF cancels it; S_obs and
    # the pwv fit see it); truth: sky_ripple [C] per scan
    sky_ripple_k_per_hour: float = 0.0
    sky_ripple_periods: float = 4.0
    # the L0 frontend_backends id of every subscan ("" = SIM_PX00, SIM_PX01, ... by subscan)
    frontend_backend: str = ""
    eta_mb: float = 1.0
    gain_curves: tuple[tuple[float, ...], ...] = ()
    # issue 14, mode "otf-chopped" (dual beam switch, docs/simulation.md): the chopper-beam
    # imbalance eps(c) = beam_imbalance_k sin(5 pi x + 0.3) K (T_A* units), added to chop
    # phase 1; sky_fluctuation: fractional rms of T'_sky per dump, the same in both chop
    # phases of a dump, zero mean over the dumps of a subscan
    beam_imbalance_k: float = 0.0
    sky_fluctuation: float = 0.0
    chop_throw_deg: float = 0.1

    @property
    def gs_xs(self) -> float:
        return 0.5 if self.sideband == "dsb" else 0.95

    @property
    def gi_xi(self) -> float:
        return 0.5 if self.sideband == "dsb" else 0.05

    @property
    def w_s(self) -> float:
        return signal_weight(self.gs_xs, self.gi_xi)

    @property
    def freq_res_hz(self) -> float:
        return self.bandwidth_ghz * 1e9 / self.n_channels

    def __post_init__(self) -> None:
        if self.sideband not in ("dsb", "2sb"):
            raise ValueError("sideband must be 'dsb' or '2sb'")
        if self.n_scans < 2 or self.load_every < 2:
            raise ValueError("need n_scans >= 2 and load_every >= 2")
        if self.zarr_format not in (2, 3):
            raise ValueError("zarr_format must be 2 or 3")
        hours = self.n_scans * self.scan_seconds / 3600.0
        if self.pwv_mm + min(0.0, self.pwv_rate_mm_per_hour) * hours <= 0:
            raise ValueError("pwv_rate_mm_per_hour: the pwv would fall to 0 in the session")
        if not 0 < self.eta_mb <= 1:
            raise ValueError("eta_mb must be in (0, 1]")
        if len(self.gain_curves) not in (0, 1, self.n_arrays):
            raise ValueError("gain_curves: one curve, or one per array")

    def t_mb_factor(self, elevation_rad: float) -> np.ndarray:
        """f_eff / (eta_mb G_a(el)) per array [A] (the truth's T_mb / T_A*)."""
        el = float(np.degrees(elevation_rad))
        curves = self.gain_curves or ((1.0,),)
        gains = [sum(c * el**k for k, c in enumerate(curves[min(a, len(curves) - 1)]))
                 for a in range(self.n_arrays)]
        return self.f_eff / (self.eta_mb * np.asarray(gains, dtype=np.float64))


@dataclass
class ScanPlan:
    scan: int
    kind: str  # "load" | "tp" | "otf"
    load_scan: int  # the last load scan before it
    start_mjd: float
    elevation_rad: float
    own_calibration: bool = False
    truth: dict[str, Any] = field(default_factory=dict)


def sideband_gains(cfg: SimulationConfig) -> tuple[Any, Any]:
    """(g_s x_s, g_i x_i): the nominal scalars, or [C] / [C, R, A] arrays with an IF-dependent
    (and pixel-dependent) ratio (SimulationConfig.sideband_ratio_*)."""
    if cfg.sideband_ratio_slope == 0 and cfg.sideband_ratio_pixel_spread == 0:
        return cfg.gs_xs, cfg.gi_xi
    x = (np.arange(cfg.n_channels) - cfg.n_channels / 2.0) / cfg.n_channels
    ratio = (cfg.gi_xi / cfg.gs_xs) * (1.0 + cfg.sideband_ratio_slope * x)
    if cfg.sideband_ratio_pixel_spread:
        r = np.arange(cfg.n_receivers)[:, None]
        a = np.arange(cfg.n_arrays)[None, :]
        q = np.cos(1.3 * r + 2.1 * a + 0.4)  # a fixed pattern in [-1, 1]
        ratio = ratio[:, None, None] * (1.0 + cfg.sideband_ratio_pixel_spread * q[None])
    return np.full(ratio.shape, cfg.gs_xs), cfg.gs_xs * ratio


def plan_session(cfg: SimulationConfig) -> list[ScanPlan]:
    plans: list[ScanPlan] = []
    last_load = cfg.first_scan
    science = 0
    els = np.radians(np.linspace(cfg.elevation_start_deg, cfg.elevation_end_deg, cfg.n_scans))
    for i in range(cfg.n_scans):
        number = cfg.first_scan + i
        start = cfg.mjd_start + i * cfg.scan_seconds / 86400.0
        if i % cfg.load_every == 0:
            last_load = number
            plans.append(ScanPlan(number, "load", number, start, float(els[i])))
            continue
        kind = cfg.modes[science % len(cfg.modes)]
        plans.append(ScanPlan(number, kind, last_load, start, float(els[i]),
                              own_calibration=science in cfg.own_calibration))
        science += 1
    return plans


class _Instrument:
    """Receiver, gain bandpass and frequency axes shared by all scans of a session."""

    def __init__(self, cfg: SimulationConfig, table: Any):
        c = np.arange(cfg.n_channels, dtype=np.float64)
        self.ref_channel = cfg.n_channels / 2.0
        self.signal_freq = cfg.frequency_ghz * 1e9
        self.image_freq = self.signal_freq - 2 * cfg.if_ghz * 1e9
        dc = (c - self.ref_channel) * cfg.freq_res_hz
        self.nu_sig = self.signal_freq + cfg.freq_off_hz + dc
        self.nu_img = self.image_freq + cfg.freq_off_hz - dc
        x = (c - self.ref_channel) / cfg.n_channels  # -0.5 .. 0.5
        r = np.arange(cfg.n_receivers)[None, :, None]
        a = np.arange(cfg.n_arrays)[None, None, :]
        pix = 1.0 + 0.05 * r + 0.03 * a
        self.t_rec = cfg.t_rec_k * pix * (1.0 + 0.3 * x[:, None, None] ** 2)  # [C, R, A] SSB
        self.gs_xs, self.gi_xi = sideband_gains(cfg)  # float or [C] / [C, R, A]
        self.w_s = signal_weight(self.gs_xs, self.gi_xi)
        self.w3 = weight_cube(self.w_s, cfg.n_channels)  # [C, Rw, Aw]
        self.t_rec_dsb = self.w3 * self.t_rec
        ripple = 1.0 + 0.2 * np.sin(2 * np.pi * 3.0 * x[:, None, None] + 0.5 * r + 0.3 * a)
        self.t_hot_eff = sideband_weighted(self.nu_sig, self.nu_img, cfg.thot_k, self.w_s)
        self.t_cold_eff = sideband_weighted(self.nu_sig, self.nu_img, cfg.tcold_k, self.w_s)
        # gain: scale so the hottest load count stays below MAX_COUNTS
        peak = float(np.max(self.t_rec_dsb + as_cube(self.t_hot_eff)))
        self.gamma = ripple * (0.8 * MAX_COUNTS / (peak * 1.25))  # counts / K, [C, R, A]
        self.dead = np.zeros(self.gamma.shape, dtype=bool)
        if cfg.dead_channels:
            rng = np.random.default_rng(cfg.seed + 7919)
            for ri in range(cfg.n_receivers):
                for ai in range(cfg.n_arrays):
                    idx = rng.choice(cfg.n_channels, cfg.dead_channels, replace=False)
                    self.dead[idx, ri, ai] = True
        # a SkyTable (issue 13: T_atm vs airmass and ground temperature) is evaluated per
        # scan at its subscans' airmass and tamb; a zenith table once here
        self.table = table
        self.per_subscan = hasattr(table, "t_ground_k")
        if not self.per_subscan:
            self.slab_sig = table.slab(self.nu_sig, cfg.pamb_hpa)
            self.slab_img = table.slab(self.nu_img, cfg.pamb_hpa)
        self.sky = SkyInputs(self.nu_sig, self.nu_img, self.w_s, cfg.f_eff, 2.725, EXACT)


def _line_profile(cfg: SimulationConfig, center_frac: float) -> np.ndarray:
    c = np.arange(cfg.n_channels)
    center = center_frac * cfg.n_channels
    return np.exp(-0.5 * ((c - center) / cfg.line_width_channels) ** 2)


def simulate_session(out: str | Path, cfg: SimulationConfig = SimulationConfig(),
                     table: Any = None, overwrite: bool = False) -> list[ScanPlan]:
    """Write an L0 session to ``out`` (and the truth to ``<out>.truth.zarr``)."""
    import zarr

    out = Path(out)
    truth_path = truth_path_for(out)
    for p in (out, truth_path):
        if p.exists():
            if not overwrite:
                raise FileExistsError(f"{p} exists (use overwrite=True / --overwrite)")
            shutil.rmtree(p)
    default = table is None
    if table is None:
        from calpipe.atmosphere.tableio import load_default_table

        table = load_default_table()
    inst = _Instrument(cfg, table)
    if default:  # the pipeline's default sky: a shipped sky table where one covers the tuning
        from calpipe.atmosphere.skyio import find_sky_table

        found = find_sky_table(inst.nu_sig, inst.nu_img, cfg.pamb_hpa, shipped=True)
        if found is not None and _sky_table_fits(found[0], cfg):
            table = found[0]
            inst = _Instrument(cfg, table)
    plans = plan_session(cfg)
    root = zarr.open_group(str(out), mode="w", zarr_format=_zarr_format(cfg))
    root.attrs.update({"producer": "calpipe.simulate", "simulation": _cfg_json(cfg)})
    truth_root = None
    if cfg.write_truth:
        truth_root = zarr.open_group(str(truth_path), mode="w", zarr_format=_zarr_format(cfg))
        truth_root.attrs.update({
            "simulation": _cfg_json(cfg), "pwv_mm": cfg.pwv_mm, "gs_xs": cfg.gs_xs,
            "gi_xi": cfg.gi_xi, "f_eff": cfg.f_eff, "table_digest": table.digest,
            "table_model": table.model,
        })
        _write(truth_root, "t_rec", inst.t_rec, ("C", "R", "A"))
        _write(truth_root, "gamma", inst.gamma, ("C", "R", "A"))
        _write(truth_root, "dead", inst.dead, ("C", "R", "A"))
        _write(truth_root, "frequency_signal", inst.nu_sig, ("C",))
        _write(truth_root, "frequency_image", inst.nu_img, ("C",))
        _write(truth_root, "t_hot_eff", np.asarray(inst.t_hot_eff), ("C",) if np.ndim(
            inst.t_hot_eff) == 1 else ("C", "R", "A"))
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(plans))
    for plan, seed in zip(plans, seeds, strict=True):
        rng = np.random.default_rng(seed)
        group = root.create_group(scan_group_name(plan.scan))
        group.attrs.update(_scan_attrs(cfg, plan))
        if plan.kind == "load" or plan.own_calibration:
            _write_loads(group, cfg, inst, plan, rng)
        if plan.kind != "load":
            _write_science(group, cfg, inst, plan, rng, truth_root)
    log.info("simulated %d scans into %s", len(plans), out)
    return plans


def _sky_table_fits(table: Any, cfg: SimulationConfig) -> bool:
    """The session's elevations and ambient temperatures lie inside the sky table's ranges."""
    els = np.radians([cfg.elevation_start_deg, cfg.elevation_end_deg])
    a = 1.0 / np.sin(els)
    tg = [cfg.tamb_k, cfg.tamb_k + cfg.tamb_step_k * (cfg.n_scans - 1)]
    return bool(table.airmass[0] <= min(a) and max(a) <= table.airmass[-1]
                and table.t_ground_k[0] <= min(tg) and max(tg) <= table.t_ground_k[-1])


def _zarr_format(cfg: SimulationConfig) -> Literal[2, 3]:
    return 2 if cfg.zarr_format == 2 else 3


def truth_path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".zarr") + ".truth.zarr")


def _cfg_json(cfg: SimulationConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def _scan_attrs(cfg: SimulationConfig, plan: ScanPlan) -> dict[str, Any]:
    return {
        "scan_number": plan.scan,
        "source": "SIM-CLOUD" if plan.kind != "load" else "LOAD",
        "instmode": {"tp": "TP", "otf": "OTF", "otf-chopped": "OTF-DBS",
                     "load": "CAL"}[plan.kind],
        "line": "CO(2-1)",
        "rest_freq_hz": cfg.frequency_ghz * 1e9,
        "telescope": cfg.telescope,
        "date_obs": f"MJD {plan.start_mjd:.6f}",
        "gs_xs": cfg.gs_xs,
        "gi_xi": cfg.gi_xi,
        "f_eff": cfg.f_eff,
        "obs_id": f"sim-{cfg.seed}-{plan.scan}",
    }


def _gain(cfg: SimulationConfig, inst: _Instrument, plan: ScanPlan, t_mjd: np.ndarray
          ) -> np.ndarray:
    """g(t) [C, D, R, A] for dump times t [D] (drift since the scan's load scan)."""
    load_start = cfg.mjd_start + (plan.load_scan - cfg.first_scan) * cfg.scan_seconds / 86400.0
    if not cfg.gain_drift_reset:
        load_start = cfg.mjd_start
    hours = (t_mjd - load_start) * 24.0
    factor = 1.0 + cfg.gain_drift_per_hour * hours
    return inst.gamma[:, None, :, :] * factor[None, :, None, None]


def sky_ripple(cfg: SimulationConfig, plan: ScanPlan) -> np.ndarray:
    """The standing wave added to the sky of a scan [C] (K); zeros unless configured."""
    hours = (plan.start_mjd - cfg.mjd_start) * 24.0
    c = np.arange(cfg.n_channels, dtype=np.float64)
    return (cfg.sky_ripple_k_per_hour * hours
            * np.sin(2 * np.pi * cfg.sky_ripple_periods * c / cfg.n_channels))


def subscan_pwv(cfg: SimulationConfig, subscan_mjd: np.ndarray) -> np.ndarray:
    """pwv [S] of subscans starting at ``subscan_mjd``: pwv_mm + rate x hours from mjd_start
    to the subscan's mid-time."""
    mid = np.asarray(subscan_mjd, dtype=np.float64) + cfg.n_dumps * cfg.exptime_s / 2 / 86400
    return cfg.pwv_mm + cfg.pwv_rate_mm_per_hour * (mid - cfg.mjd_start) * 24.0


def _column(values: np.ndarray, s: int) -> np.ndarray:
    """[C] or [C, S] -> [C] (subscan s)."""
    return values if values.ndim == 1 else values[:, s]


def _t_rec_dsb(cfg: SimulationConfig, inst: _Instrument, t_mjd: np.ndarray) -> np.ndarray:
    """T'_rec [C, D, R, A] at dump times t [D] ([C, 1, R, A] without a T_rec drift)."""
    if cfg.t_rec_drift_per_hour == 0:
        return inst.t_rec_dsb[:, None]
    factor = 1.0 + cfg.t_rec_drift_per_hour * (t_mjd - cfg.mjd_start) * 24.0
    return inst.t_rec_dsb[:, None] * factor[None, :, None, None]


def _dump_times(start: float, cfg: SimulationConfig) -> np.ndarray:
    return start + (np.arange(cfg.n_dumps) + 0.5) * cfg.exptime_s / 86400.0


def _to_counts(expected: np.ndarray, cfg: SimulationConfig, rng: np.random.Generator,
               dead: np.ndarray) -> np.ndarray:
    """Add radiometer noise, round, mark dead channels; [C, D, R, A] -> int32."""
    if cfg.noise:
        sigma = expected / np.sqrt(cfg.freq_res_hz * cfg.exptime_s)
        expected = expected + sigma * rng.standard_normal(expected.shape)
    counts = np.rint(expected)
    counts[np.broadcast_to(dead[:, None], counts.shape)] = 1000.0
    if np.any(counts >= np.iinfo(np.int32).max) or np.any(counts <= FILL_VALUE):
        raise ValueError("simulated counts overflow int32; lower the gain or temperatures")
    return counts.astype(np.int32)


def _subscan_layout(kind: str, cfg: SimulationConfig) -> list[str]:
    if kind == "otf-chopped":  # per row: nod A (source in chop phase 1), nod B (phase 2)
        return ["SWA-ON", "SWA-OFF", "SWB-ON", "SWB-OFF"] * cfg.n_on_otf
    if kind == "tp":
        modes = ["OFF"]
        for _ in range(cfg.n_on_tp):
            modes += ["ON", "OFF"]
        return modes
    return ["OTF-OFF"] + ["OTF-ON"] * cfg.n_on_otf + ["OTF-OFF"]


def _metadata(cfg: SimulationConfig, inst: _Instrument, plan: ScanPlan, n: int,
              start: float) -> dict[str, np.ndarray]:
    sub_seconds = cfg.n_dumps * cfg.exptime_s + 2.0
    return {
        "mjd": start + np.arange(n) * sub_seconds / 86400.0,
        "exptime": np.full(n, cfg.exptime_s, dtype=np.float32),
        "elevation": np.full(n, plan.elevation_rad, dtype=np.float32),
        "azimuth": np.full(n, np.radians(120.0), dtype=np.float32),
        "pamb": np.full(n, cfg.pamb_hpa / TORR_TO_HPA, dtype=np.float32),
        "tamb": np.full(n, cfg.tamb_k + cfg.tamb_step_k * (plan.scan - cfg.first_scan),
                        dtype=np.float32),
        "signal_freq": np.full(n, inst.signal_freq),
        "image_freq": np.full(n, inst.image_freq),
        "freq_res": np.full(n, cfg.freq_res_hz),
        "freq_off": np.full(n, cfg.freq_off_hz),
        "ref_channel": np.full(n, inst.ref_channel, dtype=np.float32),
        "lloadsn": np.full(n, plan.load_scan, dtype=np.int32),
    }


def _write_loads(group: Any, cfg: SimulationConfig, inst: _Instrument, plan: ScanPlan,
                 rng: np.random.Generator) -> None:
    modes = ["HOT", "COLD"]
    n = len(modes)
    start = plan.start_mjd
    meta = _metadata(cfg, inst, plan, n, start)
    counts = np.empty((cfg.n_channels, cfg.n_dumps, cfg.n_receivers, cfg.n_arrays, n), np.int32)
    for s, mode in enumerate(modes):
        t_eff = inst.t_hot_eff if mode == "HOT" else inst.t_cold_eff
        g = _gain(cfg, inst, plan, _dump_times(meta["mjd"][s], cfg))
        t_rec = _t_rec_dsb(cfg, inst, _dump_times(meta["mjd"][s], cfg))
        expected = g * (t_rec + as_cube(t_eff)[:, None])
        counts[..., s] = _to_counts(expected, cfg, rng, inst.dead)
    cal = group.create_group("calibration")
    _write(cal, "data_5d", counts, ("C", "D", "R", "A", "S"))
    _write_strings(cal, "sobsmode", modes)
    for name, values in meta.items():
        if name != "lloadsn":
            _write(cal, name, values, ("S",))
    _write(cal, "thot", np.full(n, cfg.thot_k, dtype=np.float32), ("S",))
    _write(cal, "tcold", np.full(n, cfg.tcold_k, dtype=np.float32), ("S",))


def _write_science(group: Any, cfg: SimulationConfig, inst: _Instrument, plan: ScanPlan,
                   rng: np.random.Generator, truth_root: Any) -> None:
    modes = _subscan_layout(plan.kind, cfg)
    n = len(modes)
    start = plan.start_mjd + (2 * (cfg.n_dumps * cfg.exptime_s + 2.0) / 86400.0
                              if plan.own_calibration else 0.0)
    meta = _metadata(cfg, inst, plan, n, start)
    chopped = plan.kind == "otf-chopped"
    if chopped:  # the two chop phases of a nod position are simultaneous subscans
        sub_seconds = cfg.n_dumps * cfg.exptime_s + 2.0
        meta["mjd"] = start + (np.arange(n) // 2) * sub_seconds / 86400.0
    el, tamb = meta["elevation"].astype(float), meta["tamb"].astype(float)
    if inst.per_subscan:
        a = 1.0 / np.sin(el)
        slab_sig = inst.table.slab(inst.nu_sig, cfg.pamb_hpa, a, tamb)
        slab_img = inst.table.slab(inst.nu_img, cfg.pamb_hpa, a, tamb)
    else:
        slab_sig, slab_img = inst.slab_sig, inst.slab_img
    model = SkyModel(inst.sky, slab_sig, slab_img, el, tamb, use_model_t_atm=True)
    pwv = subscan_pwv(cfg, meta["mjd"])  # [S]
    if cfg.pwv_rate_mm_per_hour == 0:
        tsky = model.tsky_pix(cfg.pwv_mm)  # [C, Rw, Aw, S]
        tau_s, _ = slab_sig.evaluate(cfg.pwv_mm)
        tau_s = tau_s if tau_s.ndim == 2 else np.repeat(tau_s[:, None], n, axis=1)
    else:  # each subscan at its own pwv
        tsky = np.stack([model.tsky_pix(float(p))[..., s] for s, p in enumerate(pwv)], -1)
        tau_s = np.stack([_column(slab_sig.evaluate(float(p))[0], s)
                          for s, p in enumerate(pwv)], axis=1)
    tr_s = np.exp(-tau_s / np.sin(el)[None, :])  # [C, S]
    on = [s for s, m in enumerate(modes) if m.endswith("ON")]
    c, d, r, a = cfg.n_channels, cfg.n_dumps, cfg.n_receivers, cfg.n_arrays
    counts = np.empty((c, d, r, a, n), np.int32)
    ta_truth = np.zeros((c, d, r, a, len(on)))
    otf_lon = np.zeros((d, n))
    otf_lat = np.zeros((d, n))
    pix_amp = (1.0 + 0.1 * np.arange(r)[:, None] - 0.05 * np.arange(a)[None, :])  # [R, A]
    profile = _line_profile(cfg, 0.5 + 0.1 * rng.uniform(-1, 1))
    x = (np.arange(c) - inst.ref_channel) / c
    eps = cfg.beam_imbalance_k * np.sin(5.0 * np.pi * x + 0.3) if chopped else np.zeros(c)
    fluct = np.zeros((d, n))  # fractional sky fluctuation per dump, shared by a chop pair
    if chopped and cfg.sky_fluctuation:
        z = rng.standard_normal((d, n // 2))
        z -= z.mean(axis=0, keepdims=True)
        fluct = np.repeat(cfg.sky_fluctuation * z, 2, axis=1)
    ripple = sky_ripple(cfg, plan)  # [C] K
    for s, mode in enumerate(modes):
        g = _gain(cfg, inst, plan, _dump_times(meta["mjd"][s], cfg))
        t_rec = _t_rec_dsb(cfg, inst, _dump_times(meta["mjd"][s], cfg))  # [C, D or 1, R, A]
        sky = t_rec + tsky[..., s][:, None] + ripple[:, None, None, None]
        if chopped:  # dual beam switch: phase 1 = SWA-ON and SWB-OFF, phase 2 = the others
            sky = sky + tsky[..., s][:, None] * fluct[None, :, s, None, None]
            phase1 = mode in ("SWA-ON", "SWB-OFF")
            row = s // 4
            otf_lon[:, s] = np.linspace(-0.05, 0.05, d) * (1 if row % 2 == 0 else -1)
            otf_lat[:, s] = -0.02 + 0.02 * row
            if mode.endswith("OFF"):  # the other chop beam: a throw away from the track
                otf_lon[:, s] += cfg.chop_throw_deg * (1 if mode == "SWA-OFF" else -1)
            signal = np.broadcast_to(eps[:, None, None, None] if phase1 else 0.0,
                                     (c, d, r, a)).copy()
            if mode.endswith("ON"):
                spatial = np.exp(-0.5 * (otf_lon[:, s]**2 + otf_lat[:, s]**2) / 0.03**2)
                ta = (cfg.line_peak_k * profile[:, None, None, None]
                      * spatial[None, :, None, None] * pix_amp[None, None])
                ta_truth[..., on.index(s)] = ta
                signal += ta
            expected = g * (sky + inst.w3[:, None] * cfg.f_eff * tr_s[:, s, None, None, None]
                            * signal)
        elif mode.endswith("ON"):
            k = on.index(s)
            if plan.kind == "otf":
                lon = np.linspace(-0.05, 0.05, d) * (1 if k % 2 == 0 else -1)
                lat = np.full(d, -0.02 + 0.02 * k)
                otf_lon[:, s], otf_lat[:, s] = lon, lat
                spatial = np.exp(-0.5 * (lon**2 + lat**2) / 0.03**2)  # [D]
            else:
                spatial = np.ones(d)
            ta = (cfg.line_peak_k * profile[:, None, None, None] * spatial[None, :, None, None]
                  * pix_amp[None, None])  # [C, D, R, A]
            ta_truth[..., k] = ta
            expected = g * (sky + inst.w3[:, None] * cfg.f_eff * tr_s[:, s, None, None, None]
                            * ta)
        else:
            expected = g * sky
        counts[..., s] = _to_counts(expected, cfg, rng, inst.dead)
        if mode.endswith("ON") and cfg.fill_fraction > 0:
            hit = rng.random((d, r, a)) < cfg.fill_fraction
            counts[..., s][:, hit] = FILL_VALUE
            ta_truth[..., on.index(s)][:, hit] = np.nan
    src = group.create_group("source")
    _write(src, "data_5d", counts, ("C", "D", "R", "A", "S"))
    _write_strings(src, "sobsmode", modes)
    for name, values in meta.items():
        _write(src, name, values, ("S",))
    if plan.kind in ("otf", "otf-chopped"):
        _write(src, "otf_lon", otf_lon, ("D", "S"))
        _write(src, "otf_lat", otf_lat, ("D", "S"))
    else:
        _write(src, "otf_lon", np.zeros(n), ("S",))
        _write(src, "otf_lat", np.zeros(n), ("S",))
    offs = np.stack(np.meshgrid(np.arange(r), np.arange(a), indexing="ij")) * 0.01  # deg
    _write(src, "pixel_offset_lon", np.repeat(offs[0][..., None], n, axis=2), ("R", "A", "S"))
    _write(src, "pixel_offset_lat", np.repeat(offs[1][..., None], n, axis=2), ("R", "A", "S"))
    if np.ndim(inst.gs_xs):  # per-channel sideband gains (issue 13)
        dims = ("C",) if np.ndim(inst.gs_xs) == 1 else ("C", "R", "A")
        _write(src, "gs_xs", np.asarray(inst.gs_xs, dtype=np.float64), dims)
        _write(src, "gi_xi", np.asarray(inst.gi_xi, dtype=np.float64), dims)
    _write_strings(src, "frontend_backends", [cfg.frontend_backend or f"SIM_PX{k:02d}"
                                              for k in range(n)])
    _write_strings(src, "raw_fits_headers", [json.dumps({"SUBSCAN": k}) for k in range(n)])
    if truth_root is not None:
        tg = truth_root.create_group(scan_group_name(plan.scan))
        tg.attrs.update({"kind": plan.kind, "elevation_rad": plan.elevation_rad,
                         "on_index": on, "load_scan": plan.load_scan})
        _write(tg, "ta_star", ta_truth, ("C", "D", "R", "A", "S_on"))
        if cfg.eta_mb != 1.0 or cfg.gain_curves:  # issue 14: the T_mb scale
            k_mb = cfg.t_mb_factor(plan.elevation_rad)  # [A]
            _write(tg, "t_mb", ta_truth * k_mb[None, None, None, :, None],
                   ("C", "D", "R", "A", "S_on"))
        _write(tg, "tr_signal", tr_s[:, on], ("C", "S_on"))
        if cfg.sky_ripple_k_per_hour:
            _write(tg, "sky_ripple", ripple, ("C",))
        _write(tg, "pwv_mm", pwv, ("S",))  # issue 14: each subscan's pwv
        if chopped:  # issue 14: what each beam's calibration gives, T_A* + sign eps
            beam = [modes[s][2] for s in on]
            sign = np.array([1.0 if b == "A" else -1.0 for b in beam])
            tg.attrs.update({"beam": beam, "partner": [s + 1 for s in on]})
            _write(tg, "imbalance_k", eps, ("C",))
            _write(tg, "ta_star_beam", ta_truth + eps[:, None, None, None, None] * sign,
                   ("C", "D", "R", "A", "S_on"))
            _write(tg, "sky_fluctuation", fluct, ("D", "S"))
        if tsky.shape[1:3] == (1, 1):
            _write(tg, "t_sky_eff", tsky[:, 0, 0], ("C", "S"))
        else:
            _write(tg, "t_sky_eff", tsky, ("C", "R", "A", "S"))


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 5:  # data_5d: one subscan per chunk, <= ~8 MB
        c, d, r, a, _ = shape
        per_channel = d * r * a * 4
        cc = max(1, min(c, (8 << 20) // max(per_channel, 1)))
        return (cc, d, r, a, 1)
    return shape


def _write(group: Any, name: str, values: np.ndarray, dims: tuple[str, ...]) -> None:
    values = np.asarray(values)
    kwargs: dict[str, Any] = {}
    if group.metadata.zarr_format == 3:
        kwargs["dimension_names"] = dims
    arr = group.create_array(name, shape=values.shape, dtype=values.dtype,
                             chunks=_chunks(values.shape), **kwargs)
    arr[...] = values


def _write_strings(group: Any, name: str, values: list[str]) -> None:
    arr = group.create_array(name, shape=(len(values),), dtype=str)
    arr[...] = np.array(values, dtype=object)
