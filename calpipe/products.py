"""The products of the calibrate stage, before they are written (DESIGN 2.2).

A pure data module: the L1 writer imports it without importing the stages or orchestration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calpipe.physics import flags as fl
from calpipe.physics.calibrate import channel_blocks

#: the SKYDIFF fields of a CalibrationResult: all set, or all None
SKYDIFF_FIELDS = ("skydiff", "skydiff_current_scan", "skydiff_current_off",
                  "skydiff_current_mjd", "skydiff_ref_scan", "skydiff_ref_off",
                  "skydiff_ref_mjd")


@dataclass(frozen=True)
class CalibrationResult:
    """Everything one L1 scan group holds (DESIGN 2.2), before writing."""

    scan: int
    mode: str
    spectra: np.ndarray  # [C, D, R, A, S_on] f4
    flags: np.ndarray  # [C, D, R, A, S_on] u2
    t_sys: np.ndarray  # [C, R, A, S_on] f4
    weight: np.ndarray  # [C, R, A, S_on] f4
    t_rec: np.ndarray  # [C, R, A] f4
    gamma: np.ndarray  # [C, R, A] f4
    tau_signal: np.ndarray  # [C] or [C, R, A] f4; per-pair fit (issue 14): [C(, R, A), S_on]
    tau_image: np.ndarray
    tr_signal: np.ndarray  # [C, S_on] or [C, R, A, S_on] f4
    tr_image: np.ndarray
    frequency_signal: np.ndarray  # [C] f8
    frequency_image: np.ndarray
    mjd: np.ndarray  # [D, S_on] f8
    otf_lon: np.ndarray  # [D, S_on] f8
    otf_lat: np.ndarray
    elevation: np.ndarray  # [S_on] f4
    azimuth: np.ndarray
    exptime: np.ndarray
    pixel_offset_lon: np.ndarray  # [R, A, S_on] f8
    pixel_offset_lat: np.ndarray
    atm_fit_observed_k: np.ndarray  # [C, S_off] f4: pixel-averaged S_obs per OFF (calpipe.qa)
    atm_fit_model_k: np.ndarray  # [C, S_off] f4: S_mod at the fitted pwv
    attrs: dict[str, Any] = field(default_factory=dict)
    # fractional T_A* scale uncertainty from pwv_err [C, S_on] or [C, R, A, S_on] f4 (issue 13)
    scale_uncertainty: np.ndarray | None = None
    # SKYDIFF (issue 14, calpipe.physics.skydiff): K differences of S_obs between an OFF of
    # this scan and a previous OFF of the same layout; all None when there are none
    skydiff: np.ndarray | None = None  # [C, R, A, K] f4 (K)
    skydiff_current_scan: np.ndarray | None = None  # [K] i4
    skydiff_current_off: np.ndarray | None = None  # [K] i4: L0 subscan number
    skydiff_current_mjd: np.ndarray | None = None  # [K] f8: OFF mid-time (MJD)
    skydiff_ref_scan: np.ndarray | None = None  # [K] i4
    skydiff_ref_off: np.ndarray | None = None  # [K] i4
    skydiff_ref_mjd: np.ndarray | None = None  # [K] f8

    def atmosphere_layout(self) -> tuple[bool, bool]:
        """(per_pixel, per_pair) of the atmosphere arrays: tr is [C, R, A, S_on] per pixel,
        tau has an S_on axis per pair."""
        per_pixel = self.tr_signal.ndim == 4
        return per_pixel, self.tau_signal.ndim == (4 if per_pixel else 2)

    def check(self) -> None:
        """Shapes, dtypes and the NaN/flag contract; raises ValueError (a bug, not data)."""
        c, d, r, a, s = self.spectra.shape
        expect = {
            "spectra": ((c, d, r, a, s), np.float32), "flags": ((c, d, r, a, s), np.uint16),
            "t_sys": ((c, r, a, s), np.float32), "weight": ((c, r, a, s), np.float32),
            "t_rec": ((c, r, a), np.float32), "gamma": ((c, r, a), np.float32),
            "frequency_signal": ((c,), np.float64), "frequency_image": ((c,), np.float64),
            "mjd": ((d, s), np.float64), "otf_lon": ((d, s), np.float64),
            "otf_lat": ((d, s), np.float64), "elevation": ((s,), np.float32),
            "azimuth": ((s,), np.float32), "exptime": ((s,), np.float32),
            "pixel_offset_lon": ((r, a, s), np.float64),
            "pixel_offset_lat": ((r, a, s), np.float64),
        }
        k = self.atm_fit_observed_k.shape[-1] if self.atm_fit_observed_k.ndim == 2 else -1
        expect["atm_fit_observed_k"] = ((c, k), np.float32)
        expect["atm_fit_model_k"] = ((c, k), np.float32)
        per_pixel, per_pair = self.atmosphere_layout()
        tau_shape = (c,) + ((r, a) if per_pixel else ()) + ((s,) if per_pair else ())
        tr_shape = (c, r, a, s) if per_pixel else (c, s)
        for name in ("tau_signal", "tau_image"):
            expect[name] = (tau_shape, np.float32)
        for name in ("tr_signal", "tr_image"):
            expect[name] = (tr_shape, np.float32)
        if self.scale_uncertainty is not None:
            expect["scale_uncertainty"] = (tr_shape, np.float32)
        sky = [n for n in SKYDIFF_FIELDS if getattr(self, n) is not None]
        if sky and len(sky) != len(SKYDIFF_FIELDS):
            raise ValueError(f"scan {self.scan}: SKYDIFF arrays {sky} without the others")
        if sky:
            assert self.skydiff is not None
            n_k = self.skydiff.shape[-1] if self.skydiff.ndim == 4 else -1
            expect["skydiff"] = ((c, r, a, n_k), np.float32)
            for name in SKYDIFF_FIELDS[1:]:
                expect[name] = ((n_k,), np.float64 if name.endswith("mjd") else np.int32)
        for name, (shape, dtype) in expect.items():
            arr = getattr(self, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(f"scan {self.scan}: L1 array {name} is {arr.dtype}{arr.shape}, "
                                 f"expected {np.dtype(dtype)}{shape}")
        for block in channel_blocks(c):  # block by block: small boolean temporaries
            spectra, flags = self.spectra[block], self.flags[block]
            nan = np.isnan(spectra)
            if np.any(nan & ((flags & (fl.BLANKING | fl.LOW_TRANSMISSION)) == 0)):
                raise ValueError(f"scan {self.scan}: NaN in spectra without a BAD_CHANNEL, "
                                 "FILL_VALUE or LOW_TRANSMISSION flag")
            if np.any(~nan & ((flags & fl.BLANKING) != 0)):
                raise ValueError(f"scan {self.scan}: flagged samples are not NaN in spectra")
