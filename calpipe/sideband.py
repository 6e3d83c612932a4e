"""Per-channel (and per-pixel) sideband gains g_s x_s, g_i x_i (issue 13, item 5).

Sources, first found wins (docs/physics.md, "Instrument parameters"):

1. the L0 arrays ``source/gs_xs`` and ``source/gi_xi`` ([C] or [C, R, A]);
2. the calibration file named by the ``sideband_gains_file`` option, interpolated linearly in
   intermediate frequency IF(c) = |nu_sig(c) - nu_img(c)| / 2 onto the scan's channels
   (outside the file's IF range: an error, no extrapolation);
3. the scalar scan attributes / configuration defaults (calpipe.stages.instrument_parameters).

File formats: ``.npz`` with ``if_ghz`` [N] ascending and ``gs_xs``, ``gi_xi`` [N] or
[N, R, A]; or CSV (``#`` comments) with a header naming ``if_ghz, gs_xs, gi_xi``.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from calpipe.errors import ConfigError, MetadataError


@functools.lru_cache(maxsize=8)
def load_gains_file(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(if_hz [N], gs_xs [N(, R, A)], gi_xi) from a calibration file; ConfigError if unusable."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if_ghz, gs, gi = (np.asarray(z[k], dtype=np.float64)
                                  for k in ("if_ghz", "gs_xs", "gi_xi"))
        else:
            lines = [ln for ln in p.read_text().splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
            header = [h.strip() for h in lines[0].replace(",", " ").split()]
            rows = np.array([[float(x) for x in ln.replace(",", " ").split()]
                             for ln in lines[1:]])
            col = {name: header.index(name) for name in ("if_ghz", "gs_xs", "gi_xi")}
            if_ghz, gs, gi = (rows[:, col[k]] for k in ("if_ghz", "gs_xs", "gi_xi"))
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"sideband gains file {path}: unreadable ({exc})") from exc
    if if_ghz.ndim != 1 or if_ghz.size < 2 or np.any(np.diff(if_ghz) <= 0):
        raise ConfigError(f"sideband gains file {path}: if_ghz must be >= 2 ascending values")
    if gs.shape != gi.shape or gs.shape[0] != if_ghz.size or gs.ndim not in (1, 3):
        raise ConfigError(f"sideband gains file {path}: gs_xs {gs.shape} / gi_xi {gi.shape} "
                          f"must be [N] or [N, R, A] with N = {if_ghz.size}")
    if not (np.all(np.isfinite(gs)) and np.all(np.isfinite(gi)) and np.all(gs > 0)
            and np.all(gi >= 0)):
        raise ConfigError(f"sideband gains file {path}: need gs_xs > 0, gi_xi >= 0, finite")
    return if_ghz * 1e9, gs, gi


def gains_from_file(path: str, nu_sig: np.ndarray, nu_img: np.ndarray, n_r: int, n_a: int,
                    scan: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate the file's gains to the channels' IF: [C] or [C, R, A]."""
    if_hz, gs, gi = load_gains_file(str(path))
    if_c = np.abs(np.asarray(nu_sig) - np.asarray(nu_img)) / 2.0
    if if_c.min() < if_hz[0] * (1 - 1e-9) or if_c.max() > if_hz[-1] * (1 + 1e-9):
        raise MetadataError(f"channel IF {if_c.min() / 1e9:.4f}-{if_c.max() / 1e9:.4f} GHz "
                            f"outside the sideband gains file's {if_hz[0] / 1e9:.4f}-"
                            f"{if_hz[-1] / 1e9:.4f} GHz ({path})", scan=scan,
                            array="sideband_gains_file")
    if gs.ndim == 3 and gs.shape[1:] != (n_r, n_a):
        raise MetadataError(f"sideband gains file {path} has pixels {gs.shape[1:]}, the scan "
                            f"({n_r}, {n_a})", scan=scan, array="sideband_gains_file")

    def interp(v: np.ndarray) -> np.ndarray:
        flat = v.reshape(v.shape[0], -1)
        out = np.stack([np.interp(if_c, if_hz, flat[:, j]) for j in range(flat.shape[1])], -1)
        return out.reshape((if_c.size,) + v.shape[1:])

    return interp(gs), interp(gi)
