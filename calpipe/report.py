"""Campaign summary: one self-contained HTML file per L1 store (issue 8; docs/qa.md).

``calpipe report OUT.zarr [-o report.html]`` reads the scan groups' attributes (and the small
``time``, ``elevation`` and ``tau_signal`` arrays) of an L1 store, ``failures.json`` and
``run_summary.json`` next to the groups, and writes one HTML file with the plots embedded as
base64 PNG: pwv, median T_sys, median T_rec, elevation (with airmass) and median zenith tau
versus time and versus scan number; a header naming the session, the input store and the
configuration digest; a table of every scan (calibrated or failed, with its QA metrics and a
link to its quick-look PNG when one exists) and a table of every failure.

:func:`write_report` is what ``calpipe report`` and the workflow's rule report (through
``calpipe.workflow.snakemake_adapter``) call; :func:`write_summary_png` (the campaign plot
alone) and :func:`collect_rows` (the table rows) are for scripts.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.json"
SUMMARY_FILE = "run_summary.json"
MJD_EPOCH = dt.datetime(1858, 11, 17, tzinfo=dt.UTC)
#: campaign plot size (inches) and resolution
FIGSIZE = (13.0, 14.0)
DPI = 100

FailuresArg = str | Path | Sequence[Mapping[str, Any]] | None


@dataclass
class ScanRow:
    """One line of the scan table (a calibrated or a failed scan)."""

    scan: int
    status: str  # "ok" | "failed"
    source: str = ""
    mode: str = ""
    mjd: float | None = None
    utc: str = ""
    pwv_mm: float | None = None
    median_t_sys_k: float | None = None
    median_t_rec_k: float | None = None
    t_sys_pixels_k: list[float] = field(default_factory=list)
    t_rec_pixels_k: list[float] = field(default_factory=list)
    fit_residual_rms_k: float | None = None
    flagged_fraction: float | None = None
    n_tsys_outliers: int | None = None
    baseline_rms_k: float | None = None
    radiometer_ratio: float | None = None
    elevation_deg: float | None = None
    airmass: float | None = None
    tau_signal: float | None = None
    quicklook: str = ""  # path of the quick-look PNG, when one exists
    warnings: list[str] = field(default_factory=list)
    stage: str = ""
    error: str = ""
    message: str = ""


def mjd_to_datetime(mjd: float) -> dt.datetime:
    """Modified Julian Date -> aware UTC datetime."""
    return MJD_EPOCH + dt.timedelta(days=float(mjd))


def _flat_finite(value: Any) -> list[float]:
    """Nested lists (None for missing) -> flat list of finite floats."""
    out: list[float] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, int | float) and np.isfinite(v):
            out.append(float(v))
    return out


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def read_failures(failures: FailuresArg) -> list[dict[str, Any]] | None:
    """A failures.json path or an already parsed list; None when the file does not exist
    (the failures are then unknown, and the report says so instead of "0 failed")."""
    if failures is None:
        return None
    if isinstance(failures, str | Path):
        path = Path(failures)
        if not path.exists():
            return None
        rows = json.loads(path.read_text())
    else:
        rows = list(failures)
    return sorted((dict(r) for r in rows), key=lambda r: (int(r.get("scan", -1)),
                                                        str(r.get("session", ""))))


def _read_finite(group: Any, name: str) -> list[float]:
    """The finite values of an optional array of a group (an empty list when absent)."""
    from calpipe import l1

    try:
        values = np.asarray(l1.read_array(group, name), dtype=np.float64).ravel()
    except KeyError:
        return []
    return [float(v) for v in values[np.isfinite(values)]]


def _row_from_group(l1_store: Path, scan: int) -> ScanRow:
    from calpipe import l1

    group: Any = l1.open_group(l1_store, scan)
    a: dict[str, Any] = dict(group.attrs)
    q: dict[str, Any] = a.get("qa", {}) or {}
    mjd = None
    try:
        m = np.asarray(l1.read_array(group, l1.DIM_TIME), dtype=np.float64)  # MJD
        m = m[np.isfinite(m)]
        mjd = float(m.min()) if m.size else None
    except KeyError:
        pass
    elevation = _median(_read_finite(group, "elevation"))  # deg, one per ON subscan
    airmass = (1.0 / float(np.sin(np.radians(elevation)))
               if elevation is not None and 0.0 < elevation <= 90.0 else None)
    tau = _median(_read_finite(group, "tau_signal"))
    pwv = a.get("pwv_mm")
    pwv_values = _flat_finite(pwv)
    tsys = _flat_finite(a.get("median_t_sys_k"))
    trec = _flat_finite(a.get("median_t_rec_k"))
    fit_rms = _flat_finite((a.get("atmosphere_fit") or {}).get("residual_rms_k"))
    return ScanRow(
        scan=scan, status="ok", source=str(a.get("source", "")), mode=str(a.get("mode", "")),
        mjd=mjd, utc=mjd_to_datetime(mjd).strftime("%Y-%m-%d %H:%M:%S") if mjd else "",
        pwv_mm=_median(pwv_values), median_t_sys_k=_median(tsys),
        median_t_rec_k=_median(trec), t_sys_pixels_k=tsys, t_rec_pixels_k=trec,
        fit_residual_rms_k=max(fit_rms) if fit_rms else None,
        flagged_fraction=_float(q.get("flagged_fraction")),
        n_tsys_outliers=(int(q["n_tsys_outliers"]) if q.get("n_tsys_outliers") is not None
                         else None),
        baseline_rms_k=_float(q.get("baseline_rms_median_k")),
        radiometer_ratio=_float(q.get("radiometer_ratio")),
        elevation_deg=elevation, airmass=airmass, tau_signal=tau,
        warnings=[str(w) for w in q.get("warnings", []) or []],
    )


def collect_rows(l1_store: str | Path, failures: FailuresArg = None) -> list[ScanRow]:
    """Every calibrated scan of ``l1_store`` and every failure, as table rows sorted by scan.

    ``failures`` defaults to ``<l1_store>/failures.json``. A scan that failed in this run but
    still has a group from an earlier run is listed as failed.
    """
    from calpipe import l1

    store = Path(l1_store)
    l1.check_format(store)  # StoreError: not an L1 store, or an unknown format version
    fails = read_failures(store / FAILURES_FILE if failures is None else failures) or []
    rows = {scan: _row_from_group(store, scan) for scan in l1.list_scans(store)}
    for f in fails:
        scan = int(f.get("scan", -1))
        row = rows.get(scan) or ScanRow(scan=scan, status="failed")
        row.status = "failed"
        row.stage = str(f.get("stage", ""))
        row.error = str(f.get("error", ""))
        row.message = str(f.get("message", ""))
        if scan in rows:
            row.message += " (the L1 group is from an earlier run)"
        rows[scan] = row
    return [rows[k] for k in sorted(rows)]


# -- plots -------------------------------------------------------------------------------------

def _summary_figure(rows: Sequence[ScanRow]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 2, sharex="col")
    ok = [r for r in rows if r.status == "ok" and r.mjd is not None]
    failed = [r for r in rows if r.status == "failed"]
    times = [mjd_to_datetime(r.mjd).replace(tzinfo=None) for r in ok if r.mjd is not None]
    scans = [r.scan for r in ok]
    quantities = (
        ("pwv_mm", None, "pwv (mm)", "pwv"),
        ("median_t_sys_k", "t_sys_pixels_k", "T_sys (K)", "median T_sys (bars: pixel range)"),
        ("median_t_rec_k", "t_rec_pixels_k", "T_rec (K)", "median T_rec (bars: pixel range)"),
        ("elevation_deg", None, "elevation (deg)", "elevation of the ON subscans (right: airmass)"),
        ("tau_signal", None, "zenith tau (neper)", "median zenith opacity, signal sideband"),
    )
    for i, (name, spread, ylabel, title) in enumerate(quantities):
        values = np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in ok])
        yerr = None
        if spread is not None:
            lo = [values[j] - min(getattr(r, spread), default=values[j]) for j, r in enumerate(ok)]
            hi = [max(getattr(r, spread), default=values[j]) - values[j] for j, r in enumerate(ok)]
            yerr = np.array([lo, hi])
        xs: tuple[list[Any], list[Any]] = (list(times), list(scans))
        for col, x in enumerate(xs):
            ax = axes[i, col]
            if ok:
                ax.errorbar(x, values, yerr=yerr,
                            fmt="o-", ms=4, lw=0.8, capsize=2, color="C0", label="calibrated")
                warn = [j for j, r in enumerate(ok) if r.n_tsys_outliers or r.warnings]
                if warn:
                    ax.plot([x[j] for j in warn], values[warn], "o", ms=9, mfc="none",
                            mec="C1", mew=1.5, label="QA warning")
            if col == 1:
                for k, r in enumerate(failed):
                    ax.axvline(r.scan, color="C3", lw=1.0, ls="--",
                               label="failed scan" if k == 0 else None)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.ticklabel_format(axis="y", useOffset=False)
            _min_span(ax, values)
            if name == "elevation_deg":
                _airmass_axis(ax)
            if i == 0:
                ax.set_title(f"{title} versus {'time (UTC)' if col == 0 else 'scan number'}")
            else:
                ax.set_title(title)
            if i == 0 and col == 1 and (ok or failed):
                ax.legend(fontsize=8, loc="best")
    import matplotlib.dates as mdates
    from matplotlib.ticker import MaxNLocator

    if times:
        multi_day = (max(times) - min(times)).total_seconds() > 86400
        axes[-1, 0].xaxis.set_major_formatter(
            mdates.DateFormatter("%m-%d %H:%M" if multi_day else "%H:%M"))
        axes[-1, 0].set_xlabel(f"time (UTC), from {min(times):%Y-%m-%d %H:%M}")
    else:
        axes[-1, 0].set_xlabel("time (UTC)")
    axes[-1, 1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 1].set_xlabel("scan number")
    for label in axes[-1, 0].get_xticklabels():
        label.set_rotation(20)
        label.set_horizontalalignment("right")
    n_ok = sum(r.status == "ok" for r in rows)
    fig.suptitle(f"campaign summary: {n_ok} calibrated, {len(failed)} failed scan(s)",
                 fontsize=13, fontweight="bold")
    return fig


def _airmass_axis(ax: Any) -> None:
    """A right-hand axis with the plane-parallel airmass 1 / sin(elevation)."""
    def to_airmass(el: Any) -> Any:
        with np.errstate(all="ignore"):
            return 1.0 / np.sin(np.radians(np.clip(el, 1.0, 90.0)))

    def to_elevation(x: Any) -> Any:
        with np.errstate(all="ignore"):
            return np.degrees(np.arcsin(1.0 / np.clip(x, 1.0, None)))

    ax.secondary_yaxis("right", functions=(to_airmass, to_elevation)).set_ylabel("airmass")


def _min_span(ax: Any, values: np.ndarray, fraction: float = 0.05) -> None:
    """Keep at least +-``fraction`` of the median on the y axis (a constant looks flat)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return
    mid = float(np.median(v))
    half = max(abs(mid) * fraction, 1e-3)
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, mid - half), max(hi, mid + half))


def summary_png(rows: Sequence[ScanRow]) -> bytes:
    """The campaign plot (pwv, T_sys, T_rec vs time and scan) as PNG bytes."""
    buf = io.BytesIO()
    _summary_figure(rows).savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def write_summary_png(l1_store: str | Path, png_path: str | Path,
                      failures: FailuresArg = None) -> Path:
    """Write the campaign plot of an L1 store to ``png_path`` (for Snakemake report())."""
    from calpipe.artifacts import atomic_write_bytes

    png = summary_png(collect_rows(l1_store, failures))
    atomic_write_bytes(Path(png_path), lambda fh: fh.write(png))
    Path(png_path).chmod(0o644)
    return Path(png_path)


# -- HTML ----------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #eee; } td.text { text-align: left; }
tr.failed td { background: #fde8e8; } tr.warn td { background: #fff6dc; }
img { max-width: 100%; } .meta td { text-align: left; }
details { margin: 0.5em 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _scan_table(rows: Sequence[ScanRow]) -> str:
    head = ("scan", "status", "source", "mode", "start (UTC)", "pwv (mm)", "T_sys (K)",
            "T_rec (K)", "elevation (deg)", "airmass", "tau", "fit rms (K)", "flagged",
            "T_sys outliers", "baseline rms (K)", "rms / radiometer", "QA warnings / failure",
            "quick-look")
    out = ['<table id="scans">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead>", "<tbody>"]
    for r in rows:
        cls = "failed" if r.status == "failed" else ("warn" if r.warnings else "ok")
        note = (f"{r.stage}: {r.error}: {r.message}" if r.status == "failed"
                else "; ".join(r.warnings))
        cells = [
            str(r.scan), r.status, r.source, r.mode, r.utc, _num(r.pwv_mm, ".3f"),
            _num(r.median_t_sys_k, ".1f"), _num(r.median_t_rec_k, ".1f"),
            _num(r.elevation_deg, ".1f"), _num(r.airmass, ".3f"), _num(r.tau_signal, ".4f"),
            _num(r.fit_residual_rms_k, ".3f"),
            _num(r.flagged_fraction, ".2%"),
            "" if r.n_tsys_outliers is None else str(r.n_tsys_outliers),
            _num(r.baseline_rms_k, ".4f"), _num(r.radiometer_ratio, ".2f"), note,
        ]
        text_cols = {1, 2, 3, 4, 16}
        tds = "".join(f'<td class="text">{_e(c)}</td>' if i in text_cols else f"<td>{_e(c)}</td>"
                      for i, c in enumerate(cells))
        tds += (f'<td class="text"><a class="quicklook" href="{_e(r.quicklook)}">PNG</a></td>'
                if r.quicklook else '<td class="text"></td>')
        out.append(f'<tr class="{cls}" data-scan="{r.scan}">{tds}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _failure_table(failures: Sequence[Mapping[str, Any]]) -> str:
    if not failures:
        return '<p id="no-failures">No failures.</p>'
    keys = ["scan", "stage", "error", "message"]
    keys += sorted({k for f in failures for k in f} - set(keys))
    out = ['<table id="failures">', "<thead><tr>" + "".join(f"<th>{_e(k)}</th>" for k in keys)
           + "</tr></thead>", "<tbody>"]
    for f in failures:
        tds = "".join(f'<td class="text">{_e(f.get(k, ""))}</td>' for k in keys)
        out.append(f'<tr class="failed" data-scan="{_e(f.get("scan", ""))}">{tds}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _read_summary(summary: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    if summary is None:
        return {}
    if isinstance(summary, Mapping):
        return dict(summary)
    path = Path(summary)
    return json.loads(path.read_text()) if path.exists() else {}


def session_name(store: Path, summary: Mapping[str, Any]) -> str:
    """The session of a run: the ``session`` of its scans (workflow), else the name of the
    input store (in-process), else the name of the L1 store."""
    names = sorted({str(r.get("session")) for r in summary.get("scans", []) or []
                    if isinstance(r, Mapping) and r.get("session")})
    if names:
        return ", ".join(names)
    if summary.get("input_store"):
        return Path(str(summary["input_store"])).stem
    return store.stem


def quicklook_dirs(l1_store: str | Path) -> list[Path]:
    """Where the quick-looks of an L1 store are written: ``OUT_quicklook/`` next to
    ``OUT.zarr`` (``calpipe calibrate --quicklook``, ``calpipe quicklook``) and
    ``quicklook/`` next to it (the workflow: ``results/<session>/quicklook/``)."""
    from calpipe.quicklook import default_quicklook_dir

    store = Path(l1_store)
    return [default_quicklook_dir(store), store.parent / "quicklook"]


def attach_quicklooks(rows: Sequence[ScanRow], l1_store: str | Path, html_dir: Path) -> None:
    """Set ``row.quicklook`` to the PNG's path relative to ``html_dir`` where one exists."""
    import os

    from calpipe.quicklook import quicklook_path

    for r in rows:
        if r.status != "ok":
            continue
        for d in quicklook_dirs(l1_store):
            png = quicklook_path(d, r.scan)
            if png.is_file():
                r.quicklook = Path(os.path.relpath(png.resolve(), html_dir.resolve())).as_posix()
                break


def _meta_table(store: Path, summary: Mapping[str, Any], rows: Sequence[ScanRow],
                failures_known: bool = True) -> str:
    n_ok = sum(r.status == "ok" for r in rows)
    n_fail = sum(r.status == "failed" for r in rows)
    failed = f"{n_fail} failed" if failures_known else "failures unknown (no failures.json)"
    items: list[tuple[str, Any]] = [("session", session_name(store, summary)),
                                    ("L1 store", store.resolve()),
                                    ("scans", f"{n_ok} calibrated, {failed}")]
    for key in ("input_store", "config_digest", "orchestration", "calpipe_version", "exit_code",
                "wall_seconds"):
        if key in summary:
            value = summary[key]
            items.append((key, f"{value:.1f} s" if key == "wall_seconds" else value))
    if summary.get("ignored_groups"):
        items.append(("ignored L0 groups", ", ".join(map(str, summary["ignored_groups"]))))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f'<table class="meta" id="run">{body}</table>'


def render_html(l1_store: str | Path, failures: FailuresArg = None,
                summary: str | Path | Mapping[str, Any] | None = None, *,
                embed_quicklooks: bool = False, title: str | None = None,
                html_dir: str | Path | None = None) -> str:
    """The campaign report as one HTML string (see :func:`write_report`); quick-look links
    are relative to ``html_dir`` (default: the directory holding the L1 store)."""
    from calpipe import __version__

    store = Path(l1_store)
    rows = collect_rows(store, failures)
    attach_quicklooks(rows, store, Path(html_dir) if html_dir is not None else store.parent)
    failures_path = store / FAILURES_FILE if failures is None else failures
    fails = read_failures(failures_path)
    known = fails is not None
    fails = fails or []
    info = _read_summary(store / SUMMARY_FILE if summary is None else summary)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    title = title or f"calpipe campaign report: {store.name}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p id="header">session <b>{_e(session_name(store, info))}</b>; input store '
        f'<code>{_e(info.get("input_store", "unknown (no run_summary.json)"))}</code>; '
        f'configuration digest <code>{_e(info.get("config_digest", "unknown"))}</code></p>',
        f"<p>Written {now} by calpipe {_e(__version__)}. QA definitions: docs/qa.md.</p>",
        _meta_table(store, info, rows, known),
        '<h2 id="plots">pwv, T_sys, T_rec, elevation, airmass and zenith tau</h2>',
        _img(summary_png(rows), "campaign summary plot"),
        f'<h2 id="scan-table">Scans ({len(rows)})</h2>', _scan_table(rows),
        f'<h2 id="failure-table">Failures ({len(fails) if known else "unknown"})</h2>',
        _failure_table(fails) if known else
        f'<p id="failures-unknown">No failures.json at {_e(failures_path)}: the failures of '
        "the run that wrote this store are unknown (pass --failures).</p>",
    ]
    if embed_quicklooks:
        from calpipe.quicklook import render_scan

        parts.append('<h2 id="quicklooks">Quick-looks</h2>')
        for r in rows:
            if r.status == "ok":
                parts.append(f"<details><summary>scan {r.scan} ({_e(r.mode)})</summary>"
                             f"{_img(render_scan(store, r.scan), f'quick-look scan {r.scan}')}"
                             "</details>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(l1_store: str | Path, html_path: str | Path, failures: FailuresArg = None,
                 summary: str | Path | Mapping[str, Any] | None = None, *,
                 embed_quicklooks: bool = False, title: str | None = None) -> Path:
    """Write the self-contained campaign report of an L1 store (atomically).

    ``failures``: a failures.json path or a parsed list (default ``<l1_store>/failures.json``);
    ``summary``: a run_summary.json path or dict (default ``<l1_store>/run_summary.json``);
    ``embed_quicklooks``: also embed every scan's quick-look (about 0.5 MB per scan).
    Scans whose quick-look PNG exists (:func:`quicklook_dirs`) get a link to it, relative to
    the HTML file.
    """
    from calpipe.artifacts import atomic_write_text

    path = Path(html_path)
    text = render_html(l1_store, failures, summary, embed_quicklooks=embed_quicklooks,
                       title=title, html_dir=path.parent)
    atomic_write_text(path, text)
    path.chmod(0o644)  # mkstemp creates 0600; a report is for sharing
    log.info("wrote the campaign report %s", path)
    return path


def default_report_path(l1_store: str | Path) -> Path:
    """``OUT.zarr`` -> ``OUT_report.html`` next to the store."""
    store = Path(l1_store)
    return store.parent / f"{store.stem}_report.html"


def rows_as_dicts(rows: Sequence[ScanRow]) -> list[dict[str, Any]]:
    """The table rows as plain dicts (JSON-able)."""
    return [asdict(r) for r in rows]
