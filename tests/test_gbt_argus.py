"""Real GBT Argus data (issue 16): SDFITS import, vane / Nod calibration, comparison with dysh.

The reference is dysh 1.1.0 on the same raw files (tests/data/gbt-argus/README.md):
``dysh_reference.npz`` was written by ``make_dysh_reference.py``; when a Python with dysh is
available (``CALPIPE_DYSH_PYTHON``, or ``.venv-dysh/bin/python`` in the repository, made by
``make dysh-venv``) the reference is recomputed live and must equal the committed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("astropy")

from calpipe.errors import ImportFormatError, L0FormatError  # noqa: E402
from calpipe.importers.sdfits import import_sdfits  # noqa: E402
from calpipe.l0 import FLOAT_COUNTS_ATTR, open_session  # noqa: E402
from calpipe.nod import NodOptions, calibrate_nod_session  # noqa: E402
from calpipe.physics import chopper  # noqa: E402

DATA = Path(__file__).parent / "data" / "gbt-argus"
REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-4  # the bar
T_CAL = 272.0  # K, the observatory's value for this VANE/SKY pair (data README)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gbt") / "argus.zarr"
    import_sdfits([DATA], out)
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "dysh_reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def result(imported: Path):
    return calibrate_nod_session(imported, NodOptions(t_cal=T_CAL))


def _fits_rows() -> list:
    from astropy.io import fits

    rows = []
    for f in sorted(DATA.glob("*.fits")):
        with fits.open(f) as h:
            rows += [{k: h[1].data[k][i] for k in h[1].columns.names}
                     for i in range(len(h[1].data))]
    return rows


# -- import ----------------------------------------------------------------------------------

def test_import_layout_and_exact_data(imported: Path) -> None:
    s = open_session(imported)
    assert s.scans() == [329, 331, 333]
    assert s.source_scans() == [331, 333]
    rows = _fits_rows()
    scan = s.load_scan(331)
    assert scan.counts.shape == (1024, 1, 16, 1, 2)
    assert scan.meta.sobsmode.tolist() == ["BEAM1", "BEAM2"]
    assert scan.attrs["nod_beams"] == [1, 9]
    assert scan.attrs["gbt_scans"] == [331, 332]
    assert scan.meta.lloadsn.tolist() == [329, 329]
    cal = s.load_calibration(331)
    assert cal.scan == 329 and cal.meta.sobsmode.tolist() == ["VANE", "SKY"]
    for row in rows:  # every DATA vector lands bit for bit at its (scan, feed) place
        n, f = int(row["SCAN"]), int(row["FDNUM"])
        if n in (329, 330):
            got = cal.counts[:, 0, f, 0, n - 329]
        else:
            group = s.load_scan(331 if n in (331, 332) else 333)
            got = group.counts[:, 0, f, 0, (n - 331) % 2]
        np.testing.assert_array_equal(got, row["DATA"].astype(np.float64))
    r331 = next(r for r in rows if r["SCAN"] == 331)
    m = scan.meta
    assert m.exptime[0] == pytest.approx(r331["EXPOSURE"], rel=1e-15)
    assert m.signal_freq[0] == r331["CRVAL1"] and m.freq_res[0] == r331["CDELT1"]
    assert m.ref_channel[0] == r331["CRPIX1"] - 1
    assert m.tamb[0] == r331["TAMBIENT"] and m.pamb[0] == r331["PRESSURE"]
    # 2022-02-01T12:52:26 UTC
    assert m.mjd[0] == pytest.approx(59611.0 + (12 * 3600 + 52 * 60 + 26) / 86400, abs=1e-9)
    r329 = next(r for r in rows if r["SCAN"] == 329)
    assert cal.thot[0] == pytest.approx(float(r329["TWARM"]) + 273.15, abs=1e-9)  # Celsius
    assert np.isnan(cal.tcold).all()


def test_import_missing_column_is_named(tmp_path: Path) -> None:
    from astropy.io import fits

    with fits.open(DATA / "file0.fits") as h:
        cols = [c for c in h[1].columns if c.name != "TAMBIENT"]
        table = fits.BinTableHDU.from_columns(cols, header=h[1].header, name="SINGLE DISH")
        fits.HDUList([h[0].copy(), table]).writeto(tmp_path / "cut.fits")
    with pytest.raises(ImportFormatError, match="TAMBIENT"):
        import_sdfits([tmp_path / "cut.fits"], tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_float_variant_needs_declaration(imported: Path, tmp_path: Path) -> None:
    import zarr

    copy = tmp_path / "copy.zarr"
    shutil.copytree(imported, copy)
    arr = zarr.open_group(str(copy), mode="r+")["scan_000331/source/data_5d"]
    assert arr.dtype == np.float32 and arr.attrs[FLOAT_COUNTS_ATTR] is True
    values = arr[...]
    values[5, 0, 3, 0, 1] = np.nan  # NaN is the float variant's fill -> NaN in memory
    arr[...] = values
    assert np.isnan(open_session(copy).load_scan(331).counts[5, 0, 3, 0, 1])
    del arr.attrs[FLOAT_COUNTS_ATTR]
    with pytest.raises(L0FormatError, match="float_counts"):
        open_session(copy).load_scan(331)


def test_cli_import(tmp_path: Path) -> None:
    from calpipe.cli import main

    out = tmp_path / "cli.zarr"
    assert main(["import", "sdfits", str(DATA), str(out)]) == 0
    assert open_session(out).source_scans() == [331, 333]
    assert main(["import", "sdfits", str(DATA), str(out)]) == 1  # exists, no --overwrite
    assert main(["import", "sdfits", str(tmp_path / "nothing"), str(tmp_path / "x.zarr")]) == 1


# -- calibration versus dysh -------------------------------------------------------------------

def test_vanecal_tsys_matches_dysh(result, reference) -> None:
    got = {b.receiver: b.vane_t_sys for r in result.scans for b in r.beams}
    beams = [int(b) for b in reference["nod_beams"]]
    assert beams == [1, 9]
    np.testing.assert_allclose([got[b] for b in beams], reference["vanecal_tsys"], rtol=RTOL)
    np.testing.assert_allclose([got[b] for b in beams], [221.5906, 201.2761], atol=5e-5)


def test_nod_spectra_match_dysh(result, reference) -> None:
    ref_rms = float(reference["average_rms"])
    for k, (n, f) in enumerate(zip(reference["nod_scan"], reference["nod_fdnum"], strict=True)):
        beam = next(b for r in result.scans if r.scan == n for b in r.beams if b.receiver == f)
        np.testing.assert_allclose(beam.t_sys[0], reference["nod_tsys"][k], rtol=RTOL)
        np.testing.assert_allclose(beam.exposure[0], reference["nod_exposure"][k], rtol=RTOL)
        ours, theirs = beam.spectra[0], reference["nod_spectra"][k]
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))  # the 31 spurs
        assert np.isnan(ours).sum() == 31
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * ref_rms)


def test_average_matches_dysh(result, reference) -> None:
    a = result.average
    assert a.n_spectra == 4
    np.testing.assert_allclose(a.t_sys, reference["average_tsys"], rtol=RTOL)
    np.testing.assert_allclose(a.exposure, reference["average_exposure"], rtol=RTOL)
    np.testing.assert_allclose(a.rms, reference["average_rms"], rtol=RTOL)
    np.testing.assert_array_equal(np.isnan(a.spectrum), reference["average_mask"])
    np.testing.assert_allclose(a.spectrum, reference["average_spectrum"], rtol=RTOL,
                               atol=RTOL * float(reference["average_rms"]))


def test_calibration_is_sensitive(imported: Path, reference) -> None:
    """The comparison can fail: a 1 % different T_cal or no spur flags break it."""
    off = calibrate_nod_session(imported, NodOptions(t_cal=T_CAL * 1.01)).average
    assert abs(off.t_sys / reference["average_tsys"] - 1) > 10 * RTOL
    nospur = calibrate_nod_session(imported, NodOptions(t_cal=T_CAL, flag_vegas_spurs=False))
    assert not np.isnan(nospur.average.spectrum).any()
    assert abs(nospur.scans[0].beams[0].t_sys[0] / reference["nod_tsys"][2] - 1) > RTOL / 10


def _dysh_python() -> str | None:
    env = os.environ.get("CALPIPE_DYSH_PYTHON")
    if env:
        return env
    local = REPO / ".venv-dysh" / "bin" / "python"
    if local.exists():
        return str(local)
    import importlib.util

    # the dev extra installs dysh (with pandas < 3) next to calpipe: use this interpreter
    return sys.executable if importlib.util.find_spec("dysh") is not None else None


def test_live_dysh_reproduces_committed_reference(tmp_path: Path, reference) -> None:
    python = _dysh_python()
    if python is None:
        pytest.skip("no dysh interpreter (set CALPIPE_DYSH_PYTHON or run make dysh-venv)")
    out = tmp_path / "live.npz"
    subprocess.run([python, str(DATA / "make_dysh_reference.py"), str(DATA), str(out)],
                   check=True, capture_output=True, timeout=600)
    with np.load(out) as live:
        for key in ("vanecal_tsys", "nod_tsys", "nod_exposure", "average_tsys",
                    "average_exposure", "average_rms"):
            np.testing.assert_allclose(live[key], reference[key], rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(live["nod_spectra"], reference["nod_spectra"], rtol=1e-12)


# -- physics units -----------------------------------------------------------------------------

def test_chopper_equations() -> None:
    vane = np.array([300.0, 310.0, 320.0])
    sky = np.array([100.0, 110.0, 100.0])
    np.testing.assert_allclose(chopper.tsys_spectrum(vane, sky, 270.0),
                               270.0 * sky / (vane - sky))
    assert chopper.tsys_scalar(vane, sky, 270.0, "mean") == pytest.approx(
        270.0 * np.mean(sky) / np.mean(vane - sky))
    assert chopper.tsys_scalar(vane, sky, 270.0, "median") == pytest.approx(
        270.0 / np.median((vane - sky) / sky))
    assert chopper.tsys_scalar(vane, sky, 270.0, "mean-ratio") == pytest.approx(
        270.0 / np.mean((vane - sky) / sky))
    # Frayer eq. 22: tau = 0 -> T_vane - T_bkg; large T_atm = T_vane -> T_vane - T_bkg too
    assert chopper.frayer_tcal(280.0, 260.0, 0.0, 1.5) == pytest.approx(280.0 - 2.725)
    assert chopper.frayer_tcal(280.0, 280.0, 0.3, 2.0) == pytest.approx(280.0 - 2.725)
    assert chopper.frayer_tcal(280.0, 260.0, 0.1, 1.0) == pytest.approx(
        257.275 + 20.0 * np.exp(0.1))
    assert chopper.gbt_airmass(90.0) == pytest.approx(-0.0234 + 1.014 / np.sin(np.radians(
        90.0 + 5.18 / 93.35)))
    np.testing.assert_allclose(chopper.ta_star([2.0], [1.0], 100.0), [100.0])
    assert chopper.switched_exposure(0.5, 0.5) == pytest.approx(0.25)
    spurs = chopper.vegas_spur_mask(1024, 16, 32, 513)
    assert spurs.sum() == 31 and spurs[0] and spurs[992] and not spurs[512]
    assert chopper.inner_channels(1024).sum() == 821
    avg = chopper.weighted_average(np.array([[1.0, np.nan], [3.0, 2.0]]), np.array([100.0, 200.0]),
                                   np.array([1.0, 1.0]), 1.0)
    w = np.array([1e-4, 2.5e-5])
    assert avg.spectrum[0] == pytest.approx((w[0] * 1 + w[1] * 3) / w.sum())
    assert avg.spectrum[1] == pytest.approx(2.0)
    assert avg.t_sys == pytest.approx((w[0] * 100 + w[1] * 200) / w.sum())


def test_tcal_methods(imported: Path) -> None:
    """T_cal from the ambient temperature, the vane temperature, or Frayer's eq. 22."""
    base = calibrate_nod_session(imported, NodOptions(t_cal=T_CAL)).scans[0].beams[0]
    s = open_session(imported)
    cal = s.load_calibration(331)
    for opts, t_cal in (
        (NodOptions(t_cal_method="ambient"), cal.meta.tamb[1]),
        (NodOptions(t_cal_method="vane"), cal.thot[0]),
        (NodOptions(t_cal_method="frayer", t_atm=250.0, tau_zenith=0.2),
         chopper.frayer_tcal(cal.thot[0], 250.0, 0.2, chopper.gbt_airmass(
             np.degrees(s.load_scan(331).meta.elevation[0])))),
    ):
        beam = calibrate_nod_session(imported, opts).scans[0].beams[0]
        assert beam.t_cal[0] == pytest.approx(float(t_cal))
        assert beam.t_sys[0] == pytest.approx(base.t_sys[0] * float(t_cal) / T_CAL)
    json.dumps(NodOptions().__dict__)  # options are plain values


# -- through the pipeline: calpipe calibrate (in process) and the Snakemake workflow ------------

@pytest.fixture(scope="module")
def l1_inprocess(imported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from calpipe.cli import main

    wd = tmp_path_factory.mktemp("l1")
    (wd / "cfg.yaml").write_text(f"calibration:\n  vane_t_cal: {T_CAL}\n")
    out = wd / "l1.zarr"
    assert main(["-q", "calibrate", str(imported), str(out), "--config",
                 str(wd / "cfg.yaml")]) == 0
    return out


def test_calpipe_calibrate_matches_dysh(l1_inprocess: Path, reference) -> None:
    from calpipe import l1
    from calpipe.nod import nod_average_from_l1

    a = nod_average_from_l1(l1_inprocess)
    assert a.n_spectra == 4
    np.testing.assert_allclose(a.t_sys, reference["average_tsys"], rtol=RTOL)
    np.testing.assert_allclose(a.exposure, reference["average_exposure"], rtol=RTOL)
    np.testing.assert_allclose(a.rms, reference["average_rms"], rtol=RTOL)
    np.testing.assert_allclose(a.spectrum, reference["average_spectrum"], rtol=RTOL,
                               atol=RTOL * float(reference["average_rms"]))
    vanecal = {}
    for k, (n, f) in enumerate(zip(reference["nod_scan"], reference["nod_fdnum"], strict=True)):
        g = l1.read_scan(l1_inprocess, int(n))  # the in-memory layout [C, D, R, A, S_on]
        attrs = dict(g.attrs)
        assert attrs["mode"] == "nod" and attrs["atmosphere_fit"]["method"] == "none"
        beam = next(b for b in attrs["nod"]["beams"] if b["receiver"] == f)
        spec = np.asarray(g.spectra[:, 0, int(f), 0, beam["s_on"]], dtype=np.float64)
        np.testing.assert_allclose(spec, reference["nod_spectra"][k], rtol=RTOL,
                                   atol=RTOL * float(reference["average_rms"]))
        np.testing.assert_allclose(beam["t_sys_k"], reference["nod_tsys"][k], rtol=RTOL)
        np.testing.assert_allclose(beam["exposure_s"], reference["nod_exposure"][k], rtol=RTOL)
        flags = np.asarray(g.flags[:, 0, int(f), 0, beam["s_on"]])
        assert np.array_equal(flags != 0, np.isnan(reference["nod_spectra"][k]))
        vanecal[int(f)] = attrs["nod"]["vane_sky_t_sys_k"][int(f)][0]
    np.testing.assert_allclose([vanecal[1], vanecal[9]], reference["vanecal_tsys"], rtol=RTOL)


def test_snakemake_mode_equals_inprocess(imported: Path, l1_inprocess: Path,
                                        tmp_path: Path) -> None:
    import sys

    import yaml
    import zarr

    snakemake = Path(sys.executable).parent / "snakemake"
    if not snakemake.exists():
        pytest.skip("snakemake not installed")
    shutil.copytree(imported, tmp_path / "s.zarr")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"stores": {"s": "s.zarr"}, "calibration": {"vane_t_cal": T_CAL}}))
    proc = subprocess.run(
        [str(snakemake), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
         str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--workflow-profile",
         str(REPO / "profiles" / "default"), "--cores", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    wf = tmp_path / "results" / "s" / "l1.zarr"
    for n in (331, 333):
        a = zarr.open_group(str(wf / f"scan_{n:06d}"), mode="r")
        b = zarr.open_group(str(l1_inprocess / f"scan_{n:06d}"), mode="r")
        for name in ("spectra", "t_sys", "weight", "flags"):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)


def test_nod_scan_with_hot_cold_loads_fails_cleanly(imported: Path, tmp_path: Path) -> None:
    """A VANE/SKY group is needed for a Nod scan, and serves only Nod scans."""
    import zarr

    from calpipe.errors import CalibrationError
    from calpipe.pipeline import calibrate_store

    copy = tmp_path / "hc.zarr"
    shutil.copytree(imported, copy)
    arr = zarr.open_array(str(copy / "scan_000329/calibration/sobsmode"), mode="r+")
    arr[...] = np.array(["HOT", "COLD"], dtype=object)
    result = calibrate_store(copy, tmp_path / "l1.zarr")
    assert [f.scan for f in result.failures] == [331, 333]
    assert result.exit_code == 1
    with pytest.raises(CalibrationError, match="no Nod scan calibrated"):
        calibrate_nod_session(copy, NodOptions(t_cal=T_CAL))


def test_chopper_forward_model() -> None:
    """docs/physics.md: the vane equations invert the chopper-wheel forward model exactly."""
    rng = np.random.default_rng(3)
    c = 64
    g = rng.uniform(1e6, 3e6, c)
    t_rx = rng.uniform(40.0, 80.0, c)
    t_vane, t_atm, tau, el = 270.0, 255.0, 0.2, 70.0
    a = float(chopper.gbt_airmass(el))
    att = np.exp(-tau * a)
    t_sky = t_atm * (1 - att) + chopper.CMB_K * att
    ta_true = rng.normal(0.0, 1.0, c)
    sky = g * (t_rx + t_sky)
    vane = g * (t_rx + t_vane)
    on = sky + g * ta_true * att
    t_cal = float(chopper.frayer_tcal(t_vane, t_atm, tau, a))
    np.testing.assert_allclose(t_cal * (on - sky) / (vane - sky), ta_true, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(chopper.tsys_spectrum(vane, sky, t_cal),
                               (t_rx + t_sky) / att, rtol=1e-12)
    assert t_cal == pytest.approx(270.80, abs=0.005)
    assert 1 - t_vane / t_cal == pytest.approx(0.0030, abs=0.00005)


def _rewrite(tmp_path: Path, change) -> Path:
    """A copy of the test data with ``change(columns)`` applied to every table (a dict of
    column name -> array, modified in place); returns the directory."""
    from astropy.io import fits

    out = tmp_path / "in"
    out.mkdir(parents=True)
    for f in sorted(DATA.glob("*.fits")):
        with fits.open(f) as h:
            data = h[1].data.copy()
            change(data)
            table = fits.BinTableHDU(data=data, header=h[1].header, name="SINGLE DISH")
            fits.HDUList([h[0].copy(), table]).writeto(out / f.name)
    return out


def test_import_rejects_what_l0_cannot_hold(tmp_path: Path) -> None:
    def exposure(d) -> None:
        d["EXPOSURE"][d["SCAN"] == 331] *= np.where(d["FDNUM"][d["SCAN"] == 331] == 1, 2.0, 1.0)

    with pytest.raises(ImportFormatError, match="scan 331: column EXPOSURE differs"):
        import_sdfits([_rewrite(tmp_path / "a", exposure)], tmp_path / "a.zarr")

    def diode(d) -> None:
        d["CAL"][0] = "T"

    with pytest.raises(ImportFormatError, match="CAL = 'T'"):
        import_sdfits([_rewrite(tmp_path / "b", diode)], tmp_path / "b.zarr")


def test_import_skips_other_procedures(tmp_path: Path) -> None:
    def onoff(d) -> None:
        for n in (333, 334):
            d["OBSMODE"][d["SCAN"] == n] = "OnOff:PSWITCHON:TPNOCAL"

    result = import_sdfits([_rewrite(tmp_path, onoff)], tmp_path / "x.zarr")
    assert result.nod_scans == (331,) and result.skipped_scans == (333, 334)
    assert open_session(tmp_path / "x.zarr").root.attrs["skipped_scans"] == [333, 334]


def test_failed_import_leaves_no_partial_store(tmp_path: Path, imported: Path) -> None:
    def procscan(d) -> None:
        d["PROCSCAN"][d["SCAN"] == 332] = "BEAM1"

    bad = _rewrite(tmp_path, procscan)
    out = tmp_path / "out.zarr"
    with pytest.raises(ImportFormatError, match="PROCSCAN"):
        import_sdfits([bad], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    shutil.copytree(imported, out)  # --overwrite: the old store survives a failed import
    with pytest.raises(ImportFormatError):
        import_sdfits([bad], out, overwrite=True)
    assert open_session(out).source_scans() == [331, 333]
    import_sdfits([DATA], out, overwrite=True)
    assert open_session(out).source_scans() == [331, 333]


def test_vane_options_rerun_resolve() -> None:
    """T_cal enters in the resolve stage, so the Snakemake resolve digest must cover it."""
    from calpipe import workflow as cw

    base = cw.calibration_config({})
    for change in ({"vane_t_cal": 272.0}, {"flag_vegas_spurs": False},
                   {"vane_t_cal_method": "vane"}):
        assert cw.stage_digest(base, "resolve") != cw.stage_digest(
            cw.calibration_config(change), "resolve"), change


def test_import_missing_row_is_nan(tmp_path: Path) -> None:
    """A feed without a row in one scan is NaN (no data) there, not invented."""
    from astropy.io import fits

    out = tmp_path / "in"
    out.mkdir()
    for f in sorted(DATA.glob("*.fits")):
        with fits.open(f) as h:
            d = h[1].data
            keep = ~((d["SCAN"] == 331) & (d["FDNUM"] == 5))
            table = fits.BinTableHDU(data=d[keep], header=h[1].header, name="SINGLE DISH")
            fits.HDUList([h[0].copy(), table]).writeto(out / f.name)
    import_sdfits([out], tmp_path / "x.zarr")
    counts = open_session(tmp_path / "x.zarr").load_scan(331).counts
    assert np.isnan(counts[:, 0, 5, 0, 0]).all()
    assert np.isfinite(counts[:, 0, 5, 0, 1]).all() and np.isfinite(counts[:, 0, 4, 0, 0]).all()


@pytest.mark.parametrize("option", [{"gain_interpolate": 3}, {"calibration_select": "nearest"},
                                    {"calibration_select": "linear"}])
def test_two_snapshot_options_refuse_vane_calibration(imported: Path, option: dict) -> None:
    """The options that combine two HOT/COLD snapshots (issue 14) do not apply to a vane
    (VANE/SKY) snapshot: a MetadataError naming the option, never a silent lloadsn run."""
    from calpipe import stages
    from calpipe.config import CalibrationConfig
    from calpipe.errors import MetadataError

    session = open_session(imported)
    scan = session.source_scans()[0]
    data = session.load_scan(scan)
    cal = session.load_calibration(scan, data.meta.lloadsn)
    name = next(iter(option))
    with pytest.raises(MetadataError, match=f"{name}.*vane"):
        stages.resolve(data, cal, CalibrationConfig(**option), None)
