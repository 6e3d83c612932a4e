"""Calibration configuration: one frozen dataclass, validated, with a stable digest.

Every option has a documented default (docs/configuration.md). The digest is a sha256 over the
canonical JSON of the options that change numbers, so a change reruns what it affects (Snakemake
params) and each L1 scan records the configuration that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calpipe.errors import ConfigError
from calpipe.physics.beam import GainCurve

PhysicsMode = Literal["exact", "kalibrate-compat"]
ObsModeOption = Literal["auto", "tp", "otf", "nod", "otf-chopped"]
ReferenceMethod = Literal["linear", "nearest"]
TatmMethod = Literal["model", "ambient"]
VaneTcalMethod = Literal["auto", "given", "ambient", "vane", "frayer"]
SkyModelOption = Literal["auto", "zenith"]
ScaleOption = Literal["ta_star", "tmb"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "physics": ("exact", "kalibrate-compat"),
    "mode": ("auto", "tp", "otf", "nod", "otf-chopped"),
    "reference": ("linear", "nearest"),
    "t_atm": ("model", "ambient"),
    "vane_t_cal_method": ("auto", "given", "ambient", "vane", "frayer"),
    "sky_model": ("auto", "zenith"),
    "scale": ("ta_star", "tmb"),
    "calibration_select": ("lloadsn", "nearest", "linear"),
}

#: the options a telescope profile (calpipe.telescopes) may set; explicit values win
PROFILE_OPTIONS = ("f_eff", "eta_mb", "eta_fss", "gain_curve")


@dataclass(frozen=True)
class CalibrationConfig:
    """Options of the calibration (DESIGN section 3).

    Instrument parameters (``gs_xs``, ``gi_xi``, ``f_eff``) are defaults used only when the scan
    attributes do not carry them; ``None`` means "no default": a scan without them fails.
    """

    physics: PhysicsMode = "exact"
    mode: ObsModeOption = "auto"
    reference: ReferenceMethod = "linear"
    t_atm: TatmMethod = "model"
    atmosphere_table: str | None = None  # path; None = the table shipped with calpipe
    # issue 13: "auto" uses a sky table (T_atm vs airmass and ground temperature, per tuning)
    # when one covers the scan (shipped, or in sky_table_dir), else the zenith table above;
    # sky_table_build: build a missing one with am (minutes per tuning) and cache it
    sky_model: SkyModelOption = "auto"
    sky_table_dir: str | None = None
    sky_table_build: bool = False
    pwv_fixed_mm: float | None = None  # skip the fit, use this pwv
    pwv_fallback_mm: float | None = None  # use this pwv when the fit fails (recorded)
    pwv_per_pixel: bool = False
    # issue 14: one pwv per OFF subscan, each ON at the pwv of its reference (interpolated
    # like the reference counts); combines with pwv_per_pixel
    pwv_per_pair: bool = False
    pwv_grid_min_mm: float = 0.001
    pwv_grid_max_mm: float = 10.0
    pwv_grid_points: int = 100
    pwv_newton_max_iter: int = 30
    pwv_newton_tol: float = 1e-9  # relative step size at convergence
    gs_xs: float | None = None
    gi_xi: float | None = None
    f_eff: float | None = None
    # per-channel (and per-pixel) sideband gains by IF (calpipe.sideband); L0 arrays
    # source/gs_xs, source/gi_xi take precedence
    sideband_gains_file: str | None = None
    clip_counts: float = 0.01  # fraction of the smoothed max of (C_hot - C_cold)
    clip_trec: float = 5.0  # x the band median of T_rec,SSB per pixel
    clip_smooth_channels: int = 16  # boxcar width for the smoothed maximum
    t_cmb: float = 2.725
    # input bounds (issue 12), enforced by the L0 reader (calpipe.l0.ReadLimits.from_config)
    max_scan_gib: float = 8.0  # in-memory (float64) size of one data_5d / any one array
    max_chunks_per_array: int = 1_000_000
    min_elevation_deg: float = 5.0  # smallest accepted source elevation
    # noise bandwidth of a channel over its spacing, dnu_eff = factor x |freq_res| (1.0: a
    # rectangular channel; e.g. ~1.2-2 for FFT spectrometers with a window, see the backend)
    noise_bandwidth_factor: float = 1.0
    # LOW_TRANSMISSION (flag bit 8) where tr_s at the ON's airmass < min_transmission; default
    # exp(-2.5) ~ 0.08: beyond tau A ~ 2.5 T_A* was measured 10 % to 1e4 x off (issue 13)
    min_transmission: float = 0.08
    blank_low_transmission: bool = True  # NaN in spectra where LOW_TRANSMISSION is set
    # chopper-wheel (VANE/SKY) calibration of Nod scans (issue 16, calpipe.nod): T_cal given
    # (vane_t_cal, K), or from the SKY subscan's tamb (ambient), the vane temperature thot
    # (vane), or Frayer's eq. 22 with vane_t_atm (K) and vane_tau_zenith (neper) (frayer);
    # auto = given when vane_t_cal is set, else ambient.
    vane_t_cal: float | None = None
    vane_t_cal_method: VaneTcalMethod = "auto"
    vane_t_atm: float | None = None
    vane_tau_zenith: float | None = None
    flag_vegas_spurs: bool = True  # blank the VEGAS spur channels (scan attribute vegas_spurs)
    # issue 14 (calpipe.physics.beam): deliver T_mb = T_A* eta_fss / (eta_mb G(el)) instead of
    # T_A*; eta_fss None = the f_eff of T_A*; gain_curve None / () = G = 1; a list of numbers
    # (ascending powers of el in deg) or of {coefficients, arrays, band_ghz} mappings
    scale: ScaleOption = "ta_star"
    eta_mb: float | None = None
    eta_fss: float | None = None
    gain_curve: tuple[GainCurve, ...] | None = None
    # issue 14: telescope profile (calpipe/data/telescopes/NAME.yaml); None = the one named by
    # the scan attribute 'telescope' if known, else none
    telescope: str | None = None
    # issue 14 item 2 (calpipe.physics.gain): 0 off; 3 = ON and OFF counts corrected for the
    # gain drift interpolated between the scan's load snapshot and the next one in the store
    gain_interpolate: int = 0
    # issue 14: which calibration snapshot a scan uses: the one its lloadsn names, or the one
    # nearest in time of that and the next snapshot in the store (IRAM MRTCAL's NEAREST), or
    # the loads of both interpolated to the scan's time (MRTCAL's LINEAR)
    calibration_select: Literal["lloadsn", "nearest", "linear"] = "lloadsn"
    # issue 14 item 1 (calpipe.dbs): OTF-chopped scans, merge the k-th ON of beam A with the
    # k-th ON of beam B into (T_A + T_B) / 2 (false: both beams stay in L1, coordinate beam)
    dbs_merge: bool = False
    # issue 14 item 3 (calpipe.physics.skydiff): SKYDIFF diagnostic, 0 = off; N > 0 = each
    # OFF's S_obs = (C_OFF - C_hot) / gamma minus that of the N most recent previous OFFs of
    # the same band and pixel layout, written to L1 (needs the scans in order)
    skydiff: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain_curve", _gain_curves(self.gain_curve))
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"option '{name}' = {getattr(self, name)!r}; expected one of {choices}"
                )
        for name in ("gs_xs", "gi_xi", "f_eff", "pwv_fixed_mm", "pwv_fallback_mm", "vane_t_cal",
                     "vane_t_atm", "vane_tau_zenith"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ConfigError(f"option '{name}' = {value!r}; expected a number >= 0")
        for name in ("f_eff", "eta_mb", "eta_fss"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)
                                      or not 0 < value <= 1):
                raise ConfigError(f"option '{name}' = {value!r}; expected 0 < {name} <= 1")
        if self.gain_interpolate not in (0, 3) or isinstance(self.gain_interpolate, bool):
            raise ConfigError(f"option 'gain_interpolate' = {self.gain_interpolate!r}; expected "
                              "0 (off) or 3 (ON and OFF counts corrected)")
        if self.gain_interpolate and self.calibration_select != "lloadsn":
            raise ConfigError(f"calibration_select '{self.calibration_select}' and "
                              "gain_interpolate 3 exclude each other (gain_interpolate already "
                              "uses both snapshots)")
        if isinstance(self.skydiff, bool) or not isinstance(self.skydiff, int) \
                or self.skydiff < 0:
            raise ConfigError(f"option 'skydiff' = {self.skydiff!r}; expected an integer >= 0 "
                              "(0 = off)")
        if self.telescope is not None and not (isinstance(self.telescope, str)
                                               and self.telescope):
            raise ConfigError(f"option 'telescope' = {self.telescope!r}; expected a profile "
                              "name")
        for name in ("pwv_per_pixel", "pwv_per_pair"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"option '{name}' = {getattr(self, name)!r}; expected true "
                                  "or false")
        if self.pwv_per_pair and self.pwv_fixed_mm is not None:
            raise ConfigError("pwv_per_pair and pwv_fixed_mm exclude each other (a fixed pwv "
                              "is not fitted per OFF)")
        if not 0 < self.pwv_grid_min_mm < self.pwv_grid_max_mm:
            raise ConfigError("pwv grid: need 0 < pwv_grid_min_mm < pwv_grid_max_mm")
        if self.pwv_grid_points < 3:
            raise ConfigError("pwv_grid_points must be >= 3")
        if not 0 <= self.clip_counts < 1:
            raise ConfigError("clip_counts must be in [0, 1)")
        if self.clip_trec <= 1:
            raise ConfigError("clip_trec must be > 1")
        if not (isinstance(self.noise_bandwidth_factor, int | float)
                and self.noise_bandwidth_factor > 0):
            raise ConfigError("noise_bandwidth_factor must be a number > 0")
        if not (isinstance(self.min_transmission, int | float)
                and 0 <= self.min_transmission < 1):
            raise ConfigError("min_transmission must be a number in [0, 1)")
        if not isinstance(self.sky_table_build, bool):
            raise ConfigError("sky_table_build must be true or false")
        if not isinstance(self.dbs_merge, bool):
            raise ConfigError(f"option 'dbs_merge' = {self.dbs_merge!r}; expected true or false")
        if not isinstance(self.blank_low_transmission, bool):
            raise ConfigError("blank_low_transmission must be true or false")
        if self.clip_smooth_channels < 1:
            raise ConfigError("clip_smooth_channels must be >= 1")
        for name in ("max_scan_gib", "max_chunks_per_array", "min_elevation_deg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"option '{name}' = {value!r}; expected a number")
        if not self.max_scan_gib > 0:
            raise ConfigError("max_scan_gib must be > 0")
        if self.max_chunks_per_array < 1:
            raise ConfigError("max_chunks_per_array must be >= 1")
        if not 0 <= self.min_elevation_deg < 90:
            raise ConfigError("min_elevation_deg must be in [0, 90)")
        if self.vane_t_cal_method == "given" and not self.vane_t_cal:
            raise ConfigError("vane_t_cal_method 'given' needs vane_t_cal > 0 (K)")
        if self.vane_t_cal_method == "frayer" and (self.vane_t_atm is None
                                                   or self.vane_tau_zenith is None):
            raise ConfigError("vane_t_cal_method 'frayer' needs vane_t_atm and vane_tau_zenith")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CalibrationConfig:
        """Build from a dict (config file section, CLI); unknown keys are a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown calibration option(s): {', '.join(unknown)}")
        try:
            return cls(**dict(values))
        except TypeError as exc:  # pragma: no cover - defensive
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> CalibrationConfig:
        """Read a YAML or JSON file; options may sit under a top-level ``calibration`` key."""
        import yaml

        try:
            text = Path(path).read_text()
            data = yaml.safe_load(text) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"configuration file {path}: expected a mapping")
        section = data.get("calibration", data)
        return cls.from_mapping(section)

    def replace(self, **changes: Any) -> CalibrationConfig:
        return dataclasses.replace(self, **changes)

    # -- identity -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def wants_next_calibration(self) -> bool:
        """Whether a scan also needs the next calibration snapshot (issue 14)."""
        return bool(self.gain_interpolate) or self.calibration_select != "lloadsn"

    @property
    def digest(self) -> str:
        """sha256 (hex, 16 chars) over the canonical JSON of all options."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} = {value!r}; expected a number")
    return float(value)


def _gain_curves(raw: Any) -> tuple[GainCurve, ...] | None:
    """gain_curve as given (None, a list of coefficients, a list of mappings, GainCurves) ->
    a tuple of GainCurve; ConfigError naming the bad entry."""
    if raw is None:
        return None
    if isinstance(raw, GainCurve):
        raw = [raw]
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"option 'gain_curve' = {raw!r}; expected a list of coefficients or "
                          "of {coefficients, arrays, band_ghz} mappings")
    if raw and all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
        raw = [{"coefficients": list(raw)}]
    out: list[GainCurve] = []
    for k, entry in enumerate(raw):
        what = f"gain_curve[{k}]"
        if isinstance(entry, GainCurve):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{what} = {entry!r}; expected a mapping with 'coefficients'")
        unknown = sorted(set(entry) - {"coefficients", "arrays", "band_ghz"})
        if unknown:
            raise ConfigError(f"{what}: unknown key(s) {', '.join(map(str, unknown))}")
        coeffs = entry.get("coefficients")
        if not isinstance(coeffs, list | tuple) or not coeffs:
            raise ConfigError(f"{what}.coefficients: expected a non-empty list of numbers")
        arrays = entry.get("arrays")
        if arrays is not None:
            if not isinstance(arrays, list | tuple) or not all(
                    isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in arrays):
                raise ConfigError(f"{what}.arrays = {arrays!r}; expected array indices >= 0")
            arrays = tuple(int(a) for a in arrays)
        band = entry.get("band_ghz")
        if band is not None:
            if not isinstance(band, list | tuple) or len(band) != 2:
                raise ConfigError(f"{what}.band_ghz = {band!r}; expected [lo, hi] (GHz)")
            lo, hi = (_number(b, f"{what}.band_ghz") for b in band)
            if not 0 <= lo < hi:
                raise ConfigError(f"{what}.band_ghz = {band!r}; expected 0 <= lo < hi")
            band = (lo, hi)
        out.append(GainCurve(tuple(_number(c, f"{what}.coefficients") for c in coeffs),
                             arrays, band))
    return tuple(out)


@dataclass(frozen=True)
class InstrumentParameters:
    """Sideband gains and forward efficiency for one scan (DESIGN 3.1); the sideband weights
    follow from them (calpipe.physics.radiometry.signal_weight). The gains are floats, or
    arrays [C] / [C, R, A] when given per channel (issue 13)."""

    gs_xs: Any
    gi_xi: Any
    f_eff: float
    source: Mapping[str, str] = field(default_factory=dict)  # where each value came from
