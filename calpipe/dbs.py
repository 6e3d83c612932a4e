"""OTF-chopped / dual-beam switch (DBS): the L1 bookkeeping of the two beams (issue 14).

The stages calibrate every ON subscan of a chopped scan against its chop partner, dump by
dump (calpipe.physics.reference.prepare_chopped, calibrate_full's ``ref_index``): beams A and
B are calibrated independently and L1 keeps every ON on its subscan axis, with the
coordinate ``beam``. With ``dbs_merge`` the k-th ON of beam A and the k-th ON of beam B are
combined into one spectrum (``merge_result``):

  T      = (T_A + T_B) / 2         a chopper imbalance eps (phase 1 - phase 2) enters the A ON
                                   (source in phase 1) with +eps and the B ON (source in
                                   phase 2) with -eps, and cancels in the plain mean
  flags  = flags_A | flags_B
  weight = 4 / (1 / w_A + 1 / w_B)  (the inverse variance of the mean; A and B independent)
  t_sys  = sqrt((t_sys_A^2 + t_sys_B^2) / 2)
  tr, scale_uncertainty, otf_lon/lat, pixel offsets: mean of A and B
  time, elevation, azimuth, frontend_backend, subscan: those of the A ON; exptime: A + B
  (so that weight = dnu exptime / t_sys^2 still holds for equal beams); the coordinate
  ``subscan_b`` names the B ON.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from calpipe.errors import MetadataError
from calpipe.physics.reference import PreparedData
from calpipe.products import CalibrationResult

MERGED_BEAM = "AB"


def beam_pairs(scan: int, beam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ia, ib): positions on the S_on axis of the k-th ON of beam A and of beam B."""
    ia = np.flatnonzero(np.asarray(beam) == "A")
    ib = np.flatnonzero(np.asarray(beam) == "B")
    if ia.size != ib.size or ia.size == 0:
        raise MetadataError(f"dbs_merge: beam A has {ia.size} and beam B {ib.size} ON "
                            "subscans; the merge pairs the k-th A ON with the k-th B ON",
                            scan=scan, array="source/sobsmode")
    return ia, ib


def dbs_attrs(prepared: PreparedData, merged: bool) -> dict[str, Any]:
    """The L1 attribute ``dbs``: per ON its beam and chop partner (L0 subscan numbers)."""
    assert prepared.beam is not None and prepared.ref_per_dump is not None
    assert prepared.ref_dump_time_s is not None
    return {
        "reference": "per-dump: dump d of the ON minus dump d of its chop partner (the k-th "
                     "OFF of the same beam for the k-th ON)",
        "on_subscans": prepared.on_index.tolist(),
        "beams": [str(b) for b in prepared.beam.tolist()],
        "partner_subscans": prepared.ref_per_dump.tolist(),
        "ref_dump_time_s": prepared.ref_dump_time_s.tolist(),
        "merged": merged,
        # the L1 coordinate beam, one per L1 subscan
        "beam": [str(b) for b in prepared.beam.tolist()],
    }


def _mean(x: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (x[..., ia].astype(np.float64) + x[..., ib].astype(np.float64)))


def _json_nan(values: Any) -> Any:
    """NaN -> None in a (nested) list, as the L1 attributes write a missing number."""
    if isinstance(values, list):
        return [_json_nan(v) for v in values]
    return None if isinstance(values, float) and not np.isfinite(values) else values


def merge_result(result: CalibrationResult, prepared: PreparedData) -> CalibrationResult:
    """The DBS pair merge of a calibrated chopped scan (see the module docstring)."""
    assert prepared.beam is not None
    ia, ib = beam_pairs(result.scan, prepared.beam)
    f32 = np.float32
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = 4.0 / (1.0 / result.weight[..., ia].astype(np.float64)
                        + 1.0 / result.weight[..., ib].astype(np.float64))
        t_sys = np.sqrt(0.5 * (result.t_sys[..., ia].astype(np.float64) ** 2
                               + result.t_sys[..., ib].astype(np.float64) ** 2))
    attrs = dict(result.attrs)
    on = prepared.on_index
    ref = dict(attrs.get("reference", {}))
    per_beam = dict(ref)
    n = ia.size
    ref.update({"on_index": on[ia].tolist(), "weight": [0.0] * n,
                "shared_variance_fraction": [0.0] * n})
    for key in ("t_lo_s", "t_hi_s"):
        if isinstance(ref.get(key), list):
            ref[key] = [ref[key][int(k)] for k in ia]
    attrs["reference"] = ref
    dbs = dict(attrs.get("dbs", {}))
    dbs.update({"merged": True, "beam": [MERGED_BEAM] * n,
                "pairs": [[int(a), int(b)] for a, b in zip(on[ia], on[ib], strict=True)],
                "subscan_b": on[ib].tolist(), "reference_per_beam": per_beam})
    attrs["dbs"] = dbs
    fb = attrs.get("frontend_backends")
    if isinstance(fb, list) and len(fb) == on.size:
        attrs["frontend_backends"] = [fb[int(k)] for k in ia]
    scale = attrs.get("scale")
    if isinstance(scale, dict) and isinstance(scale.get("factor"), list):
        scale = dict(scale)
        for key in ("factor", "gain"):
            scale[key] = _mean(np.asarray(scale[key], dtype=np.float64), ia, ib).tolist()
        attrs["scale"] = scale
    unc = result.scale_uncertainty
    tau: dict[str, Any] = {}
    if result.atmosphere_layout()[1]:  # per-pair pwv (issue 14): tau per ON, pwv per ON
        tau = {name: _mean(getattr(result, name), ia, ib).astype(f32)
               for name in ("tau_signal", "tau_image")}
        fit = dict(attrs.get("atmosphere_fit", {}))
        for key in ("pwv_on_mm", "pwv_on_err_mm"):
            if fit.get(key) is not None:
                values = np.asarray(fit[key], dtype=np.float64)  # None (no error) -> NaN
                fit[key] = _json_nan(_mean(values, ia, ib).tolist())
        attrs["atmosphere_fit"] = fit
    return dataclasses.replace(
        result, **tau,
        spectra=_mean(result.spectra, ia, ib).astype(f32),
        flags=result.flags[..., ia] | result.flags[..., ib],
        t_sys=t_sys.astype(f32), weight=weight.astype(f32),
        tr_signal=_mean(result.tr_signal, ia, ib).astype(f32),
        tr_image=_mean(result.tr_image, ia, ib).astype(f32),
        mjd=result.mjd[..., ia].copy(),
        otf_lon=_mean(result.otf_lon, ia, ib), otf_lat=_mean(result.otf_lat, ia, ib),
        elevation=result.elevation[ia].copy(), azimuth=result.azimuth[ia].copy(),
        exptime=(result.exptime[ia] + result.exptime[ib]).astype(f32),
        pixel_offset_lon=_mean(result.pixel_offset_lon, ia, ib),
        pixel_offset_lat=_mean(result.pixel_offset_lat, ia, ib),
        scale_uncertainty=None if unc is None else _mean(unc, ia, ib).astype(f32),
        attrs=attrs,
    )


__all__ = ["MERGED_BEAM", "beam_pairs", "dbs_attrs", "merge_result"]
