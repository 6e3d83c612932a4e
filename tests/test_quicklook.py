"""Quick-look PNGs and the HTML campaign report (issue 8)."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calpipe import cli, l1
from calpipe.pipeline import calibrate_store
from calpipe.quicklook import SIZE_PX, default_quicklook_dir, quicklook_scan, quicklook_store
from calpipe.report import DPI, FIGSIZE, default_report_path, write_report
from calpipe.testing import analytic_table, copy_session, read_array, replace_array

BROKEN_SCAN = 1004  # every subscan set to "ON": NoReferenceError in stage prepare


@pytest.fixture(scope="module")
def campaign(small_session: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Path, Path]]:
    """(L0 session with scan 1004 broken, its L1 store calibrated by calibrate_store)."""
    root = tmp_path_factory.mktemp("quicklook")
    session = copy_session(small_session, root / "session.zarr")
    n_sub = read_array(session, BROKEN_SCAN, "source/sobsmode").shape[0]
    replace_array(session, BROKEN_SCAN, "source/sobsmode", np.array(["ON"] * n_sub))
    out = root / "l1.zarr"
    result = calibrate_store(session, out, table=analytic_table())
    assert [f.scan for f in result.failures] == [BROKEN_SCAN]
    assert result.failures[0].error == "NoReferenceError"
    yield session, out
    shutil.rmtree(root, ignore_errors=True)


def _is_nonempty_image(img: np.ndarray) -> bool:
    rgb = img[..., :3].astype(np.float64)
    rgb = rgb / 255.0 if rgb.max() > 1 else rgb
    return float(rgb.std()) > 0.05 and float((rgb.mean(axis=-1) < 0.9).mean()) > 0.02


def test_quicklook_store_writes_one_png_per_scan(campaign: tuple[Path, Path]) -> None:
    import matplotlib.image as mpimg

    _, out = campaign
    paths = quicklook_store(out)
    scans = l1.list_scans(out)
    assert scans == [1001, 1002, 1005]
    assert [p.name for p in paths] == [f"scan_{s:06d}.png" for s in scans]
    assert all(p.parent == default_quicklook_dir(out) == out.parent / "l1_quicklook"
               for p in paths)
    for p in paths:
        img = mpimg.imread(p)
        assert img.shape[:2] == (SIZE_PX[1], SIZE_PX[0])  # rows, columns
        assert _is_nonempty_image(img)


def test_quicklook_reads_the_fit_diagnostic_from_l1(campaign: tuple[Path, Path]) -> None:
    _, out = campaign
    ds = l1.open_scan(out, 1002)
    assert ds.atm_fit_observed_k.dims == ("frequency", "off_subscan")
    assert ds.atm_fit_model_k.attrs["units"] == "K"
    obs, mod = ds.atm_fit_observed_k.values, ds.atm_fit_model_k.values
    assert obs.shape[1] == len(ds.attrs["reference"]["off_index"])
    resid = obs - mod
    assert np.isfinite(mod).all() and np.isfinite(obs).mean() > 0.9
    # pixel-averaged residuals are no larger than the fit's residual rms over all samples
    fit_rms = float(np.max(ds.attrs["atmosphere_fit"]["residual_rms_k"]))
    assert np.sqrt(np.nanmean(resid**2)) <= fit_rms + 1e-3
    assert np.nanmedian(mod) < 0  # sky colder than the hot load


def test_quicklook_scan_path_is_free(campaign: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    _, out = campaign
    png = quicklook_scan(out, 1001, tmp_path / "deep" / "tp.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == SIZE_PX


class _ReportParser(HTMLParser):
    """Tables (by id) as lists of (row attributes, cell texts) and every <img> src."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict[str, str], list[str]]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._row: tuple[dict[str, str], list[str]] | None = None
        self._cell: list[str] | None = None
        self.in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "thead":
            self.in_head = True
        elif tag == "tr" and self._table is not None and not self.in_head:
            self._row = (a, [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self.in_head = False
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _ReportParser:
    parser = _ReportParser()
    parser.feed(path.read_text())
    return parser


def _decode_png(src: str) -> Any:
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))


def test_report_lists_every_scan_and_failure(campaign: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    session, out = campaign
    html = write_report(out, tmp_path / "report.html")
    page = _parse(html)
    rows = page.tables["scans"]
    assert [int(a["data-scan"]) for a, _ in rows] == [1001, 1002, BROKEN_SCAN, 1005]
    status = {int(cells[0]): cells[1] for _, cells in rows}
    assert status == {1001: "ok", 1002: "ok", BROKEN_SCAN: "failed", 1005: "ok"}
    modes = {int(cells[0]): cells[3] for _, cells in rows}
    assert modes[1001] == "tp" and modes[1002] == "otf"
    broken = next(cells for _, cells in rows if int(cells[0]) == BROKEN_SCAN)
    assert "NoReferenceError" in broken[-2]  # the last column: the quick-look link
    failures = json.loads((out / "failures.json").read_text())
    frows = page.tables["failures"]
    assert len(frows) == len(failures) == 1
    assert frows[0][1][:3] == [str(BROKEN_SCAN), "prepare", "NoReferenceError"]
    assert str(session.name) in html.read_text()  # run_summary.json: the input store
    assert len(page.images) == 1  # self-contained: the one plot is embedded
    with _decode_png(page.images[0]) as im:
        assert im.size == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
    assert "http" not in "".join(page.images)


def test_report_header_conditions_and_quicklook_links(campaign: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    import re

    session, out = campaign
    summary = json.loads((out / "run_summary.json").read_text())
    quicklook_store(out)  # OUT_quicklook/ next to the store
    html = write_report(out, tmp_path / "sub" / "report.html")
    text = html.read_text()
    header = re.search(r'<p id="header">(.*?)</p>', text)
    assert header is not None
    assert f"session <b>{session.stem}</b>" in header.group(1)
    assert summary["input_store"] in header.group(1)
    assert summary["config_digest"] in header.group(1)
    meta = {cells[0]: cells[1] for _, cells in _parse(html).tables["run"]}
    assert meta["session"] == session.stem
    assert meta["config_digest"] == summary["config_digest"]
    # a link per calibrated scan, relative to the HTML file, to a PNG that exists
    links = dict(re.findall(r'data-scan="(\d+)">.*?<a class="quicklook" href="([^"]+)"', text))
    assert sorted(map(int, links)) == [1001, 1002, 1005]
    for scan, href in links.items():
        assert not href.startswith("/")
        assert (html.parent / href).resolve() == (default_quicklook_dir(out)
                                                  / f"scan_{int(scan):06d}.png").resolve()
    # elevation, airmass and tau per scan (the simulator: 60 -> 40 deg over the session)
    head = re.search(r'<table id="scans">\s*<thead><tr>(.*?)</tr>', text)
    assert head is not None
    columns = re.findall(r"<th>(.*?)</th>", head.group(1))
    rows = {int(cells[0]): cells for _, cells in _parse(html).tables["scans"]}
    for scan in (1001, 1002, 1005):
        cells = dict(zip(columns, rows[scan], strict=True))
        el = l1.open_scan(out, scan).elevation.values
        assert float(cells["elevation (deg)"]) == pytest.approx(np.median(el), abs=0.05)
        assert float(cells["airmass"]) == pytest.approx(
            1 / np.sin(np.radians(np.median(el))), abs=2e-3)
        tau = np.median(l1.open_scan(out, scan).tau_signal.values)
        assert float(cells["tau"]) == pytest.approx(tau, abs=1e-4)
        assert 40.0 <= float(cells["elevation (deg)"]) <= 60.0
    # the workflow's layout: results/<session>/quicklook next to results/<session>/l1.zarr
    shutil.rmtree(default_quicklook_dir(out))
    html2 = write_report(out, tmp_path / "r2.html")
    assert 'class="quicklook"' not in html2.read_text()  # no PNG: no link
    quicklook_store(out, out.parent / "quicklook")
    html3 = write_report(out, out.parent / "report.html")
    assert 'href="quicklook/scan_001001.png"' in html3.read_text()
    shutil.rmtree(out.parent / "quicklook")
    (out.parent / "report.html").unlink()


def test_report_cli_default_path_and_failure_list(campaign: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    _, out = campaign
    assert cli.main(["-q", "report", str(out)]) == 0
    default = default_report_path(out)
    assert default == out.parent / "l1_report.html" and default.exists()
    # a workflow-style failure list with an extra column, and quick-looks embedded
    fails = [{"scan": 1001, "stage": "atmosphere", "error": "AtmosphereError",
              "message": "grid <edge> & co", "session": "night1"}]
    html = write_report(out, tmp_path / "r.html", failures=fails, summary={},
                        embed_quicklooks=True)
    page = _parse(html)
    frows = page.tables["failures"]
    assert frows[0][1] == ["1001", "atmosphere", "AtmosphereError", "grid <edge> & co",
                           "night1"]
    status = {int(a["data-scan"]): cells[1] for a, cells in page.tables["scans"]}
    assert status[1001] == "failed" and BROKEN_SCAN not in status
    assert len(page.images) == 1 + 2  # summary + quick-looks of the two ok scans
    with _decode_png(page.images[1]) as im:
        assert im.size == SIZE_PX


def test_report_of_a_missing_store_is_an_error(tmp_path: Path) -> None:
    assert cli.main(["-q", "report", str(tmp_path / "nope.zarr")]) == 1


def test_calibrate_quicklook_option(tiny_session: Path, atm_table_file: Path,
                                    scratch: Path) -> None:
    import matplotlib.image as mpimg

    out = scratch / "night.zarr"
    code = cli.main(["-q", "calibrate", str(tiny_session), str(out), "--scans", "1002",
                     "--atmosphere-table", str(atm_table_file), "--quicklook"])
    assert code == 0
    png = scratch / "night_quicklook" / "scan_001002.png"
    assert mpimg.imread(png).shape[:2] == (SIZE_PX[1], SIZE_PX[0])


# -- issue 15: velocity axis, unclipped spectra, flag names -------------------------------------

def _texts(fig: Any) -> str:
    parts = [t.get_text() for ax in fig.axes for t in ax.texts]
    parts += [ax.get_title() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes]
    return "\n".join(parts)


def test_quicklook_velocity_axis(campaign: tuple[Path, Path]) -> None:
    from calpipe.quicklook import build_figure

    _, out = campaign
    ds = l1.open_scan(out, 1001)
    fig = build_figure(out, 1001, axis="velocity")
    spectral = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(spectral) >= 5
    assert all(ax.get_xlabel() == "radio velocity, topocentric (km/s)" for ax in spectral)
    tp = next(ax for ax in fig.axes if ax.get_title().startswith("TP:"))
    np.testing.assert_allclose(tp.lines[0].get_xdata(), ds.velocity.values, rtol=1e-12)
    # images run the same way as the line plots (velocity decreases with channel)
    flags_ax = next(ax for ax in fig.axes if ax.get_title().startswith("flags"))
    left, right = flags_ax.get_xlim()
    assert left < right
    freq = build_figure(out, 1001)
    assert all(ax.get_xlabel() == "signal sky frequency (GHz)" for ax in freq.axes
               if ax.get_xlabel() and ax.get_ylabel() != "")
    with pytest.raises(Exception, match="axis must be one of"):
        build_figure(out, 1001, axis="channel")


def test_tp_spectrum_panel_does_not_clip_line_peaks(campaign: tuple[Path, Path]) -> None:
    from calpipe.quicklook import build_figure

    _, out = campaign
    mean = l1.open_scan(out, 1001).spectra.mean("time").values  # [C, R, A]
    top, bottom = float(np.nanmax(mean)), float(np.nanmin(mean))
    tp = next(ax for ax in build_figure(out, 1001).axes if ax.get_title().startswith("TP:"))
    y0, y1 = tp.get_ylim()
    assert y0 < bottom and y1 > top


def test_narrow_line_is_not_clipped() -> None:
    """A one-channel 5 K line in one pixel of 256 x 4 spectra: robust percentile limits
    (as for T_sys) cut it, the T_A* panel shows it."""
    from matplotlib.figure import Figure

    from calpipe.quicklook import XAxis, _spectra_panel

    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 0.1, (256, 2, 2))
    values[100, 1, 0] = 5.0
    xa = XAxis(np.linspace(230.0, 231.0, 256), "GHz", "frequency")
    ax_robust, ax_full = Figure().subplots(1, 2)
    _spectra_panel(ax_robust, xa, values, "t", "K")
    _spectra_panel(ax_full, xa, values, "t", "K", full_range=True)
    assert ax_robust.get_ylim()[1] < 5.0  # what the TP panel did before issue 15
    assert ax_full.get_ylim()[1] > 5.0 and ax_full.get_ylim()[0] < values.min()


def test_quicklook_names_flags(campaign: tuple[Path, Path]) -> None:
    from calpipe.physics import flags as fl
    from calpipe.quicklook import build_figure

    _, out = campaign
    flags = l1.open_scan(out, 1002).flags.values
    text = _texts(build_figure(out, 1002))
    assert "flag bits" not in text
    for bit, name in fl.NAMES.items():
        n = int(np.count_nonzero(flags & bit))
        if n:
            assert f"{name} {n / flags.size:.2%}" in text, name
        else:
            assert f"{name} " not in text.split("flags set:")[1].splitlines()[0], name
    assert "BAD_CHANNEL" in text and "FILL_VALUE" in text  # the session has both


def test_quicklook_cli_velocity(campaign: tuple[Path, Path], tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    _, out = campaign
    assert cli.main(["-q", "quicklook", str(out), "--axis", "velocity", "--scans", "1001",
                     "-o", str(tmp_path / "ql")]) == 0
    png = tmp_path / "ql" / "scan_001001.png"
    assert _is_nonempty_image(mpimg.imread(png))
    assert cli.main(["-q", "quicklook", str(tmp_path / "nope.zarr")]) == 1


def test_colorbars_sit_next_to_their_panels(campaign: tuple[Path, Path]) -> None:
    from calpipe.quicklook import build_figure

    _, out = campaign
    fig = build_figure(out, 1002)  # OTF: waterfall and flag images
    fig.canvas.draw()
    for prefix in ("OTF waterfall", "flags"):
        ax = next(a for a in fig.axes if a.get_title().startswith(prefix))
        (cax,) = ax.child_axes
        gap = cax.get_position().x0 - ax.get_position().x1
        assert 0 <= gap < 0.02, (prefix, gap)
