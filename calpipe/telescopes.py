"""Telescope profiles (issue 14 item 6): YAML files in ``calpipe/data/telescopes/``.

A profile sets the site pressure range, the frequency range and the efficiencies (f_eff,
eta_mb, eta_fss, gain_curve) of one telescope. It is chosen by the configuration option
``telescope`` (CLI ``--telescope``), else by the L0 scan attribute ``telescope`` when that names
a profile or one of its aliases (case-insensitive), else none. Options set explicitly in the
configuration win over the profile; a scan attribute (f_eff) wins over both, as before.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from calpipe.config import PROFILE_OPTIONS, CalibrationConfig
from calpipe.errors import ConfigError, MetadataError
from calpipe.physics.beam import GainCurve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TelescopeProfile:
    name: str
    description: str
    aliases: tuple[str, ...]
    frequency_ghz: tuple[float, float] | None
    pressure_hpa: tuple[float, float] | None
    options: dict[str, Any]  # the PROFILE_OPTIONS it sets (None = not set)
    digest: str

    def attrs(self, source: str) -> dict[str, Any]:
        """The L1 attribute 'telescope_profile'."""
        opts = {k: _plain(v) for k, v in self.options.items()}
        return {"name": self.name, "selected_by": source, "digest": self.digest,
                "frequency_ghz": _plain(self.frequency_ghz),
                "pressure_hpa": _plain(self.pressure_hpa), **opts}

    def check_scan(self, scan: int, nu_ghz: tuple[float, float], pamb_hpa: float) -> None:
        """MetadataError when the scan's signal band or ambient pressure lie outside the
        profile's ranges (the wrong profile, or broken metadata)."""
        if self.frequency_ghz is not None:
            lo, hi = self.frequency_ghz
            if nu_ghz[0] < lo or nu_ghz[1] > hi:
                raise MetadataError(
                    f"signal band {nu_ghz[0]:.3f}-{nu_ghz[1]:.3f} GHz is outside the "
                    f"{lo:g}-{hi:g} GHz of telescope profile '{self.name}'", scan=scan,
                    array="source/signal_freq")
        if self.pressure_hpa is not None:
            lo, hi = self.pressure_hpa
            if not lo <= pamb_hpa <= hi:
                raise MetadataError(
                    f"ambient pressure {pamb_hpa:.1f} hPa is outside the site range {lo:g}-"
                    f"{hi:g} hPa of telescope profile '{self.name}'", scan=scan,
                    array="source/pamb")


def _plain(value: Any) -> Any:
    """JSON-ready: tuples -> lists, GainCurve -> mapping."""
    if isinstance(value, GainCurve):
        return {"coefficients": list(value.coefficients),
                "arrays": None if value.arrays is None else list(value.arrays),
                "band_ghz": None if value.band_ghz is None else list(value.band_ghz)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def known_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    folder = resources.files("calpipe") / "data" / "telescopes"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


@functools.cache
def load_profile(name: str) -> TelescopeProfile:
    """The shipped profile NAME; ConfigError naming the known ones otherwise."""
    import yaml

    known = known_profiles()
    if name not in known:
        raise ConfigError(f"unknown telescope profile {name!r}; known profiles: "
                          f"{', '.join(known)}")
    text = (resources.files("calpipe") / "data" / "telescopes" / f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    where = f"telescope profile {name}"
    if not isinstance(data, dict) or data.get("name") != name:
        raise ConfigError(f"{where}: expected a mapping with name: {name}")
    allowed = {"name", "description", "aliases", "frequency_ghz", "pressure_hpa",
               *PROFILE_OPTIONS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    options = {k: data.get(k) for k in PROFILE_OPTIONS}
    # validated exactly as configuration options (ConfigError on a bad value)
    checked = CalibrationConfig.from_mapping({k: v for k, v in options.items() if v is not None})
    options = {k: getattr(checked, k) if options[k] is not None else None
               for k in PROFILE_OPTIONS}
    return TelescopeProfile(
        name=name, description=str(data.get("description", "")),
        aliases=tuple(str(a) for a in data.get("aliases") or ()),
        frequency_ghz=_range(data.get("frequency_ghz"), f"{where}: frequency_ghz"),
        pressure_hpa=_range(data.get("pressure_hpa"), f"{where}: pressure_hpa"),
        options=options, digest=hashlib.sha256(text.encode()).hexdigest()[:16])


def _range(raw: Any, what: str) -> tuple[float, float] | None:
    if raw is None:
        return None
    if (not isinstance(raw, list) or len(raw) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
            or not 0 <= raw[0] < raw[1]):
        raise ConfigError(f"{what} = {raw!r}; expected [lo, hi] with 0 <= lo < hi")
    return float(raw[0]), float(raw[1])


def match_attribute(telescope: Any) -> str | None:
    """The profile whose name or alias equals the scan attribute (case-insensitive)."""
    if not isinstance(telescope, str) or not telescope.strip():
        return None
    key = telescope.strip().lower()
    for name in known_profiles():
        profile = load_profile(name)
        if key == name.lower() or key in (a.lower() for a in profile.aliases):
            return name
    return None


def select(config: CalibrationConfig, scan_telescope: Any
           ) -> tuple[TelescopeProfile | None, str]:
    """(profile, how it was chosen: 'config' | 'scan attribute telescope' | 'none')."""
    if config.telescope is not None:
        return load_profile(config.telescope), "config"
    name = match_attribute(scan_telescope)
    if name is None:
        return None, "none"
    return load_profile(name), "scan attribute telescope"


def apply(config: CalibrationConfig, profile: TelescopeProfile | None) -> CalibrationConfig:
    """The configuration with the profile's values for the options it leaves unset."""
    if profile is None:
        return config
    changes = {k: v for k, v in profile.options.items()
               if v is not None and getattr(config, k) is None}
    return config.replace(**changes) if changes else config
