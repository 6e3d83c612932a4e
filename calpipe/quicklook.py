"""Per-scan quick-look PNG of an L1 scan group (issue 8; docs/qa.md).

Six panels, rendered headless (matplotlib Agg, no pyplot state, so safe in threads and cluster
jobs): T_sys and T_rec spectra per pixel; the pwv fit (observed vs model sky-minus-hot per OFF,
with residuals, from the L1 arrays ``atm_fit_observed_k`` / ``atm_fit_model_k``); a waterfall
of T_A* over dumps (OTF) or the averaged spectrum per pixel (TP); the flagged fraction per
channel and pixel; and the QA summary of the scan attributes.

Everything comes from the L1 store alone (no L0 store, no atmosphere table). Big arrays are
read one ON subscan at a time.

Entry points: :func:`quicklook_store` (every scan of a store: ``calpipe calibrate
--quicklook``, ``calpipe quicklook`` and the workflow's rule quicklook through
``calpipe.workflow.snakemake_adapter``), :func:`quicklook_scan` (one scan -> one PNG, for
scripts) and :func:`render_scan` (PNG bytes, used by the HTML report).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import CalpipeError
from calpipe.physics import flags as fl

log = logging.getLogger(__name__)

#: figure size (inches) and resolution: every quick-look is 1400 x 1200 pixels
FIGSIZE = (14.0, 12.0)
DPI = 100
SIZE_PX = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height)
#: at most this many channel columns / dump rows in the waterfall and flag images
MAX_IMAGE_CHANNELS = 1024
MAX_IMAGE_ROWS = 600


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def default_quicklook_dir(l1_store: str | Path) -> Path:
    """``OUT.zarr`` -> ``OUT_quicklook/`` next to the store."""
    store = Path(l1_store)
    return store.parent / f"{store.stem}_quicklook"


def quicklook_path(out_dir: str | Path, scan: int) -> Path:
    """PNG path of a scan: ``<out_dir>/scan_NNNNNN.png``."""
    from calpipe.l0 import scan_group_name

    return Path(out_dir) / f"{scan_group_name(scan)}.png"


# -- reading ---------------------------------------------------------------------------------

def _open_group(l1_store: str | Path, scan: int) -> Any:
    from calpipe import l1

    return l1.open_group(l1_store, scan)


def _bin_channels(x: np.ndarray, n_max: int) -> np.ndarray:
    """NaN-mean of groups of channels along axis 0 so that at most ``n_max`` remain."""
    n_c = x.shape[0]
    k = int(np.ceil(n_c / n_max))
    if k <= 1:
        return x
    pad = (-n_c) % k
    if pad:
        x = np.concatenate([x, np.full((pad, *x.shape[1:]), np.nan)], axis=0)
    with _quiet():
        return np.nanmean(x.reshape(-1, k, *x.shape[1:]), axis=1)


def _read_scan(group: Any) -> dict[str, Any]:
    """The small arrays plus per-subscan reductions of spectra and flags."""
    from calpipe import l1

    small = {"t_sys": "t_sys", "t_rec": "t_rec", "frequency_signal": l1.DIM_FREQUENCY,
             "mjd": l1.DIM_TIME}
    data: dict[str, Any] = {key: l1.read_array(group, name) for key, name in small.items()}
    names = set(group.array_keys())
    for name in ("atm_fit_observed_k", "atm_fit_model_k"):
        data[name] = l1.read_array(group, name) if name in names else None
    rest = group["velocity"].attrs.get("rest_frequency_hz") if "velocity" in names else None
    data["rest_freq_hz"] = rest
    n_c, _n_t, n_r, n_a = group["spectra"].shape
    n_s = int(group[l1.DIM_SUBSCAN].shape[0])
    n_d = l1.n_dumps(group)
    mean_pix_rows = []  # pixel-mean T_A* per dump: [C, D] per subscan
    sum_spec = np.zeros((n_c, n_r, n_a))
    cnt_spec = np.zeros((n_c, n_r, n_a))
    flag_frac = np.zeros((n_c, n_r, n_a))
    outlier = np.zeros((n_r, n_a), dtype=bool)
    bits = {**fl.NAMES, 0xFF00: "RESERVED_8_15"}
    flag_counts = dict.fromkeys(bits.values(), 0)
    for s in range(n_s):
        x = l1.read_subscan(group, "spectra", s).astype(np.float64)  # [C, D, R, A]
        f = l1.read_subscan(group, "flags", s)
        ok = np.isfinite(x)
        with _quiet():
            mean_pix_rows.append(np.nanmean(x, axis=(2, 3)))
        sum_spec += np.where(ok, x, 0.0).sum(axis=1)
        cnt_spec += ok.sum(axis=1)
        flag_frac += ((f & np.uint16(~fl.TSYS_OUTLIER & 0xFFFF)) != 0).mean(axis=1)
        outlier |= ((f & np.uint16(fl.TSYS_OUTLIER)) != 0).any(axis=(0, 1))
        for bit, name in bits.items():
            flag_counts[name] += int(np.count_nonzero(f & np.uint16(bit)))
    with _quiet():
        data["mean_spectrum"] = np.where(cnt_spec > 0, sum_spec / np.maximum(cnt_spec, 1),
                                         np.nan)
    data["waterfall"] = (np.concatenate(mean_pix_rows, axis=1) if mean_pix_rows
                         else np.zeros((n_c, 0)))  # [C, D * S_on]
    data["flag_fraction"] = flag_frac / max(n_s, 1)  # [C, R, A], TSYS_OUTLIER excluded
    data["outlier_pixels"] = outlier
    data["flag_counts"] = flag_counts
    data["n_samples"] = n_c * n_d * n_r * n_a * n_s
    data["skydiff"] = None  # issue 14: SKYDIFF pairs, pixel-mean [C, K] and their labels
    if "skydiff" in names:
        with _quiet():
            data["skydiff"] = np.nanmean(l1.read_array(group, "skydiff"), axis=(1, 2))
        data["skydiff_pairs"] = {
            key: l1.read_array(group, f"skydiff_{key}").tolist()
            for key in ("current_scan", "current_off", "ref_scan", "ref_off")}
    ids = l1.read_array(group, "pixel_id") if "pixel_id" in names else None
    data["pixel_id"] = (None if ids is None else
                        np.array([str(x) for x in ids.ravel().tolist()]).reshape(ids.shape))
    data["shape"] = (n_c, n_d, n_r, n_a, n_s)
    data["attrs"] = dict(group.attrs)
    return data


# -- drawing ---------------------------------------------------------------------------------

AXES = ("frequency", "velocity")
C_KM_S = 299792.458


@dataclass(frozen=True)
class XAxis:
    """The spectral axis of every panel: sky frequency (GHz) or radio velocity (km/s)."""

    values: np.ndarray  # [C]
    label: str
    kind: str  # "frequency" | "velocity"

    @classmethod
    def of(cls, data: dict[str, Any], axis: str = "frequency") -> XAxis:
        """``velocity``: v = c (1 - nu / nu_rest), radio convention, topocentric (the L1
        ``velocity`` coordinate); falls back to frequency when the scan has no rest
        frequency."""
        if axis not in AXES:
            raise CalpipeError(f"quick-look axis must be one of {AXES}, got {axis!r}")
        nu = data["frequency_signal"]
        rest = data.get("rest_freq_hz")
        if axis == "velocity":
            if isinstance(rest, int | float) and rest > 0:
                return cls(C_KM_S * (1.0 - nu / rest),
                           "radio velocity, topocentric (km/s)", "velocity")
            log.warning("scan %s has no rest frequency: quick-look on the frequency axis",
                        data["attrs"].get("scan_number"))
        return cls(nu / 1e9, "signal sky frequency (GHz)", "frequency")


def _pixel_labels(n_r: int, n_a: int, ids: np.ndarray | None = None) -> list[str]:
    """L1 ``pixel_id`` names in (R, A) order, else ``r<r> a<a>``."""
    if ids is not None and ids.shape == (n_r, n_a):
        return [str(ids[r, a]) for r in range(n_r) for a in range(n_a)]
    return [f"r{r} a{a}" for r in range(n_r) for a in range(n_a)]


def _x_range(xa: XAxis) -> tuple[float, float]:
    """(left, right) of an image: ascending, like the line plots (velocity runs backwards)."""
    lo, hi = float(xa.values[0]), float(xa.values[-1])
    return (lo, hi) if lo <= hi else (hi, lo)


def _ascending(xa: XAxis, img: np.ndarray) -> np.ndarray:
    """Channel axis 0 of an image, reversed when the x values decrease."""
    return img if xa.values[0] <= xa.values[-1] else img[::-1]


def _full_ylim(ax: Any, values: np.ndarray, pad: float = 0.06) -> None:
    """y-limits covering every finite value (line peaks included), with a margin."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    ax.set_ylim(lo - pad * span, hi + pad * span)


def _robust_ylim(ax: Any, values: np.ndarray, low: float = 1.0, high: float = 99.0,
                 pad: float = 0.15) -> None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return
    lo, hi = np.percentile(v, [low, high])
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    ax.set_ylim(lo - pad * span, hi + pad * span)


def _spectra_panel(ax: Any, xa: XAxis, values: np.ndarray, title: str, ylabel: str,
                   outliers: np.ndarray | None = None, ids: np.ndarray | None = None,
                   full_range: bool = False) -> None:
    """One line per pixel; values [C, R, A]. ``full_range``: y-limits include every value
    (spectra: line peaks must not be clipped); else robust percentiles (T_sys, T_rec)."""
    import matplotlib as mpl

    n_r, n_a = values.shape[1:3]
    colors = mpl.colormaps["tab10" if n_r * n_a <= 10 else "viridis"]
    labels = _pixel_labels(n_r, n_a, ids)
    for i, (r, a) in enumerate((r, a) for r in range(n_r) for a in range(n_a)):
        color = colors(i % 10) if n_r * n_a <= 10 else colors(i / max(n_r * n_a - 1, 1))
        bad = outliers is not None and bool(outliers[r, a])
        ax.plot(xa.values, values[:, r, a], lw=0.8, color=color,
                ls="--" if bad else "-", label=labels[i] + (" (outlier)" if bad else ""))
    if full_range:
        _full_ylim(ax, values)
    else:
        _robust_ylim(ax, values)
    ax.set_title(title)
    ax.set_xlabel(xa.label)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if n_r * n_a <= 16:
        ax.legend(fontsize=7, ncol=4, loc="best", framealpha=0.8)  # least overlap


def _fit_panel(fig: Any, spec: Any, xa: XAxis, data: dict[str, Any]) -> None:
    """Observed vs model sky-minus-hot per OFF, and residuals underneath."""
    sub = spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
    ax = fig.add_subplot(sub[0])
    axr = fig.add_subplot(sub[1], sharex=ax)
    obs, mod = data["atm_fit_observed_k"], data["atm_fit_model_k"]
    fit = data["attrs"].get("atmosphere_fit", {})
    pwv = data["attrs"].get("pwv_mm")
    pwv_err = data["attrs"].get("pwv_err_mm")
    pwv_text = (f"{pwv:.3f}" + (f" +- {pwv_err:.3f}" if isinstance(pwv_err, int | float)
                                else "") + " mm" if isinstance(pwv, int | float)
                else "per pixel" if pwv is not None else "?")
    ax.set_title(f"pwv {fit.get('method', '?')}: pwv {pwv_text}, residual rms "
                 f"{_fmt(_max_finite(fit.get('residual_rms_k')), '.3f')} K")
    if obs is None or mod is None or obs.size == 0:
        ax.text(0.5, 0.5, "no fit diagnostic in this L1 group", ha="center", va="center",
                transform=ax.transAxes)
    else:
        import matplotlib as mpl

        colors = mpl.colormaps["tab10"]
        off_index = data["attrs"].get("reference", {}).get("off_index", [])
        for k in range(obs.shape[1]):
            name = f"OFF {off_index[k]}" if k < len(off_index) else f"OFF {k}"
            ax.plot(xa.values, obs[:, k], lw=0.7, alpha=0.6, color=colors(k % 10),
                    label=f"observed, {name}")
            ax.plot(xa.values, mod[:, k], lw=1.8, ls="--", color=_darker(colors(k % 10)), zorder=3,
                    label=f"model, {name}")
            axr.plot(xa.values, obs[:, k] - mod[:, k], lw=0.7, color=colors(k % 10))
        _robust_ylim(ax, np.concatenate([obs.ravel(), mod.ravel()]), 0.5, 99.5, 0.1)
        _robust_ylim(axr, obs - mod, 1.0, 99.0, 0.3)
        ax.legend(fontsize=7, ncol=2, loc="upper right", framealpha=0.8)
    ax.set_ylabel("S = sky - hot (K)")
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    axr.axhline(0.0, color="k", lw=0.6)
    axr.set_ylabel("obs - model (K)")
    axr.set_xlabel(xa.label)
    axr.grid(alpha=0.3)


def skydiff_labels(pairs: dict[str, list[int]]) -> list[str]:
    """Legend entries of the SKYDIFF panel: 'scan S OFF o - scan S' OFF o'' per pair."""
    return [f"scan {cs} OFF {co} - scan {rs} OFF {ro}" for cs, co, rs, ro in zip(
        pairs["current_scan"], pairs["current_off"], pairs["ref_scan"], pairs["ref_off"],
        strict=True)]


def _skydiff_panel(ax: Any, xa: XAxis, data: dict[str, Any]) -> None:
    """SKYDIFF (issue 14): each pair's S_obs difference, mean over pixels."""
    import matplotlib as mpl

    diff = data["skydiff"]  # [C, K]
    labels = skydiff_labels(data["skydiff_pairs"])
    colors = mpl.colormaps["tab10"]
    for k in range(diff.shape[1]):
        ax.plot(xa.values, diff[:, k], lw=0.8, color=colors(k % 10), label=labels[k])
    depth = data["attrs"].get("skydiff", {}).get("depth", "?")
    ax.axhline(0.0, color="k", lw=0.6)
    _robust_ylim(ax, diff, 0.5, 99.5, 0.1)
    ax.set_title(f"SKYDIFF (N = {depth}): (OFF - HOT) / gamma minus that of a previous OFF, "
                 "mean over pixels")
    ax.set_xlabel(xa.label)
    ax.set_ylabel("Delta S_obs (K)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right", framealpha=0.8)


def _data_panel(fig: Any, ax: Any, xa: XAxis, data: dict[str, Any]) -> None:
    """OTF: waterfall of pixel-mean T_A* over dumps; TP: averaged spectrum per pixel."""
    attrs = data["attrs"]
    n_c, n_d, n_r, n_a, n_s = data["shape"]
    q = str((attrs.get("scale") or {}).get("quantity") or "T_A*")  # issue 14: T_mb scale
    if attrs.get("mode") in ("otf", "otf-chopped"):
        w = _bin_channels(data["waterfall"], MAX_IMAGE_CHANNELS)  # [C', rows]
        rows = w.shape[1]
        step = int(np.ceil(rows / MAX_IMAGE_ROWS))
        if step > 1:
            w = w[:, ::step]
        finite = w[np.isfinite(w)]
        vmin, vmax = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
        im = ax.imshow(_ascending(xa, w).T, aspect="auto", origin="lower",
                       interpolation="nearest", cmap="viridis", vmin=vmin, vmax=vmax,
                       extent=(*_x_range(xa), -0.5, rows - 0.5))
        for s in range(1, n_s):
            ax.axhline(s * n_d - 0.5, color="w", lw=0.6, ls=":")
        _colorbar(fig, ax, im, f"{q} (K), mean over pixels")
        ax.set_ylabel(f"dump ({n_s} ON subscans x {n_d} dumps)")
        ax.set_title(f"OTF waterfall: {q} over dumps (mean over pixels)")
    else:
        _spectra_panel(ax, xa, data["mean_spectrum"],
                       f"TP: {q} averaged over {n_d} dumps x {n_s} ON subscans",
                       f"{q} (K)", data["outlier_pixels"], data.get("pixel_id"),
                       full_range=True)
        mean_all = data["mean_spectrum"].reshape(n_c, -1)
        with _quiet():
            ax.plot(xa.values, np.nanmean(mean_all, axis=1), color="k", lw=1.2, label="mean")
    ax.set_xlabel(xa.label)


def _flag_panel(fig: Any, ax: Any, xa: XAxis, data: dict[str, Any]) -> None:
    """Fraction of flagged samples per channel and pixel; TSYS_OUTLIER pixels marked."""
    frac = data["flag_fraction"]  # [C, R, A]
    n_c, n_r, n_a = frac.shape
    img = _bin_channels(frac.reshape(n_c, n_r * n_a), MAX_IMAGE_CHANNELS)
    im = ax.imshow(_ascending(xa, img).T, aspect="auto", origin="lower",
                   interpolation="nearest", cmap="Reds", vmin=0.0, vmax=1.0,
                   extent=(*_x_range(xa), -0.5, n_r * n_a - 0.5))
    _colorbar(fig, ax, im, "fraction of dumps flagged")
    labels = _pixel_labels(n_r, n_a, data.get("pixel_id"))
    outl = data["outlier_pixels"].reshape(-1)
    if n_r * n_a <= 32:
        ax.set_yticks(range(n_r * n_a))
        ax.set_yticklabels([lab + (" TSYS!" if o else "") for lab, o in zip(labels, outl,
                                                                             strict=True)],
                           fontsize=7)
        for tick, o in zip(ax.get_yticklabels(), outl, strict=True):
            if o:
                tick.set_color("red")
    ax.set_ylabel("pixel")
    n_bad = int((frac >= 1.0).any(axis=(1, 2)).sum())
    ax.set_title(f"flags but TSYS_OUTLIER: {n_bad} of {n_c} channels always flagged "
                 "in a pixel\n"
                 f"{int(outl.sum())} pixel(s) with TSYS_OUTLIER (red labels)")
    ax.set_xlabel(xa.label)


def _colorbar(fig: Any, ax: Any, im: Any, label: str) -> None:
    """A colorbar attached to the panel's right edge (an inset: constrained layout would
    otherwise push it to the figure edge)."""
    cax = ax.inset_axes((1.01, 0.0, 0.025, 1.0))
    fig.colorbar(im, cax=cax, label=label)


def flag_legend(counts: dict[str, int], n_samples: int) -> str:
    """``BAD_CHANNEL 0.78%, FILL_VALUE 9.9%`` for the flags that are set, by name."""
    parts = [f"{name} {n / max(n_samples, 1):.2%}" for name, n in counts.items() if n]
    return "flags set: " + (", ".join(parts) if parts else "none")


def _darker(color: Any, factor: float = 0.6) -> tuple[float, float, float]:
    r, g, b = color[:3]
    return (r * factor, g * factor, b * factor)


def _fmt(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return format(v, spec) if np.isfinite(v) else "n/a"


def _max_finite(value: Any) -> float:
    v = np.asarray(value if value is not None else np.nan, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else float("nan")


def _median_finite(value: Any) -> float:
    v = np.asarray([np.nan if x is None else x for x in np.ravel(
        np.asarray(value if value is not None else np.nan, dtype=object))], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _summary_panel(ax: Any, data: dict[str, Any]) -> None:
    attrs = data["attrs"]
    q = attrs.get("qa", {})
    n_c, n_d, n_r, n_a, n_s = data["shape"]
    lines = [
        f"scan {attrs.get('scan_number')}   source {attrs.get('source', '') or '?'}   "
        f"mode {attrs.get('mode', '?')}   line {attrs.get('line', '') or '?'}",
        f"date {attrs.get('date_obs', '') or '?'}   telescope "
        f"{attrs.get('telescope', '') or '?'}   loads from scan {attrs.get('calibration_scan')}",
        f"shape: {n_c} channels x {n_d} dumps x {n_r}x{n_a} pixels x {n_s} ON subscans",
        "",
        f"median T_sys {_fmt(_median_finite(attrs.get('median_t_sys_k')), '.1f')} K   "
        f"median T_rec {_fmt(_median_finite(attrs.get('median_t_rec_k')), '.1f')} K",
        f"pwv-fit residual rms {_fmt(q.get('pwv_fit_residual_rms_k'), '.3f')} K   "
        f"T_A* scale error from pwv: median "
        f"{_fmt(attrs.get('atmosphere_fit', {}).get('scale_uncertainty_median'), '.2%')}, "
        f"max {_fmt(attrs.get('atmosphere_fit', {}).get('scale_uncertainty_max'), '.2%')}",
        f"flagged {_fmt(q.get('flagged_fraction'), '.2%')} of samples, blanked "
        f"{_fmt(q.get('blanked_fraction'), '.2%')}, bad channels "
        f"{_fmt(q.get('bad_channel_fraction'), '.2%')}",
        f"T_sys outliers: {q.get('n_tsys_outliers', 'n/a')} spectra "
        f"(factor {q.get('thresholds', {}).get('tsys_outlier_factor', '?')} from the scan "
        f"median {_fmt(q.get('tsys_scan_median_k'), '.1f')} K)",
        f"baseline rms {_fmt(q.get('baseline_rms_median_k'), '.4f')} K per dump "
        f"= {_fmt(q.get('radiometer_ratio'), '.2f')} x radiometer noise",
        flag_legend(data["flag_counts"], data["n_samples"]),
        f"line-free channels {q.get('line_free_channels', 'n/a')} (lines "
        f"{q.get('line_channels', 'n/a')}, edges {q.get('edge_channels', 'n/a')})",
        "",
    ]
    warns = q.get("warnings") or []
    lines.append("QA warnings:" if warns else "QA warnings: none")
    lines += [f"  - {w}" for w in warns[:6]]
    ax.axis("off")
    ax.set_title("QA summary (scan attributes, docs/qa.md)")
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9.5,
            transform=ax.transAxes, color="darkred" if warns else "black")


def build_figure(l1_store: str | Path, scan: int, axis: str = "frequency") -> Any:
    """The quick-look figure of one scan (a matplotlib Figure, Agg canvas).

    ``axis``: ``frequency`` (signal sky frequency, GHz) or ``velocity`` (radio, topocentric,
    km/s; needs the scan's rest frequency) for every spectral panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = _read_scan(_open_group(l1_store, scan))
    attrs = data["attrs"]
    xa = XAxis.of(data, axis)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    sky = data["skydiff"] is not None  # issue 14: a fourth row for the SKYDIFF panel
    grid = fig.add_gridspec(4 if sky else 3, 2, height_ratios=(1, 1, 1, 0.8) if sky else None)
    with _quiet():
        tsys = np.nanmedian(data["t_sys"], axis=3)  # [C, R, A] median over ON subscans
    _spectra_panel(fig.add_subplot(grid[0, 0]), xa, tsys,
                   "T_sys per pixel (T_A* scale, median over ON subscans)", "T_sys (K)",
                   data["outlier_pixels"], data["pixel_id"])
    _spectra_panel(fig.add_subplot(grid[0, 1]), xa, data["t_rec"],
                   "T_rec per pixel (SSB receiver temperature)", "T_rec (K)",
                   ids=data["pixel_id"])
    _fit_panel(fig, grid[1, 0], xa, data)
    _data_panel(fig, fig.add_subplot(grid[1, 1]), xa, data)
    _flag_panel(fig, fig.add_subplot(grid[2, 0]), xa, data)
    _summary_panel(fig.add_subplot(grid[2, 1]), data)
    if sky:
        _skydiff_panel(fig.add_subplot(grid[3, :]), xa, data)
    pwv = attrs.get("pwv_mm")
    fig.suptitle(f"calpipe quick-look: scan {attrs.get('scan_number', scan)} "
                 f"({attrs.get('mode', '?').upper()}, {attrs.get('source', '') or '?'}), "
                 f"pwv {_fmt(pwv if isinstance(pwv, int | float) else np.nan, '.3f')} mm, "
                 f"{attrs.get('date_obs', '')}", fontsize=14, fontweight="bold")
    return fig


def render_scan(l1_store: str | Path, scan: int, axis: str = "frequency") -> bytes:
    """The quick-look of one scan as PNG bytes (SIZE_PX pixels); ``axis`` as in
    :func:`build_figure`."""
    buf = io.BytesIO()
    build_figure(l1_store, scan, axis).savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def quicklook_scan(l1_store: str | Path, scan: int, png_path: str | Path,
                   axis: str = "frequency") -> Path:
    """Write the quick-look PNG of one scan (atomically) and return its path."""
    from calpipe.artifacts import atomic_write_bytes

    png = render_scan(l1_store, scan, axis)
    path = Path(png_path)
    atomic_write_bytes(path, lambda fh: fh.write(png))
    path.chmod(0o644)  # mkstemp creates 0600; a picture is for sharing
    log.info("quick-look of scan %d: %s", scan, path)
    return path


def quicklook_store(l1_store: str | Path, out_dir: str | Path | None = None,
                    scans: Sequence[int] | None = None, axis: str = "frequency"
                    ) -> list[Path]:
    """Quick-looks of every (or the given) calibrated scan of an L1 store.

    PNGs go to ``out_dir`` (default: ``OUT_quicklook/`` next to ``OUT.zarr``) as
    ``scan_NNNNNN.png``; returns their paths. ``axis``: ``frequency`` or ``velocity``.
    """
    from calpipe import l1

    l1.check_format(l1_store)  # StoreError: not an L1 store, or an unknown version
    out = Path(out_dir) if out_dir is not None else default_quicklook_dir(l1_store)
    todo = l1.list_scans(l1_store) if scans is None else list(scans)
    paths = [quicklook_scan(l1_store, scan, quicklook_path(out, scan), axis)
             for scan in todo]
    if paths:
        log.info("wrote %d quick-look(s) to %s", len(paths), out)
    return paths
