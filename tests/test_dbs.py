"""OTF-chopped / dual-beam switch (issue 14 item 1): chop pairing, per-dump reference, beams A
and B in L1, the DBS pair merge, the simulator's truth, detection and malformed layouts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from calpipe import l1, stages
from calpipe.config import CalibrationConfig
from calpipe.errors import ConfigError, MetadataError
from calpipe.l0 import FILL_VALUE, open_session
from calpipe.physics.reference import CHOPPED, detect_mode, off_subscans
from calpipe.pipeline import calibrate_store
from calpipe.simulate import truth_path_for
from calpipe.testing import (
    analytic_table,
    assert_l1_equal,
    calibrate_both_modes,
    make_session,
    read_array,
    replace_array,
    run_stages,
)

SCAN = 1001  # the science scan of a chopped session (1000 is the load scan)
TINY = {"modes": ("otf-chopped",), "n_scans": 2, "load_every": 2, "n_channels": 64,
        "n_dumps": 4, "n_receivers": 1, "n_arrays": 2, "n_on_otf": 2, "line_width_channels": 4.0}


def _session(path: Path, **changes: Any) -> Path:
    values = {**TINY, "noise": False, "beam_imbalance_k": 0.05, "sky_fluctuation": 0.01}
    values.update(changes)
    return make_session(path, **values)


def _truth(path: Path, name: str, scan: int = SCAN) -> np.ndarray:
    group: Any = zarr.open_group(str(truth_path_for(path)), mode="r")
    return np.asarray(group[f"scan_{scan:06d}"][name][...])


def _truth_attrs(path: Path, scan: int = SCAN) -> dict[str, Any]:
    group: Any = zarr.open_group(str(truth_path_for(path)), mode="r")
    return dict(group[f"scan_{scan:06d}"].attrs)


def _rel_err(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.nanmax(np.abs(got - truth)) / np.nanmax(np.abs(truth)))


@pytest.fixture(scope="module")
def noise_free(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _session(tmp_path_factory.mktemp("dbs") / "s.zarr")


# -- recovery -----------------------------------------------------------------------------

def test_each_beam_recovers_truth_plus_minus_imbalance(noise_free: Path) -> None:
    (st,) = run_stages(noise_free, CalibrationConfig())
    r = st.result
    assert r.mode == CHOPPED and st.prepared.mode == CHOPPED
    assert r.attrs["dbs"]["beam"] == ["A", "B", "A", "B"]
    assert r.attrs["dbs"]["on_subscans"] == [0, 2, 4, 6]
    assert r.attrs["dbs"]["partner_subscans"] == [1, 3, 5, 7]
    truth = _truth(noise_free, "ta_star")
    eps = _truth(noise_free, "imbalance_k")
    sign = np.array([1.0, -1.0, 1.0, -1.0])
    expect = truth + eps[:, None, None, None, None] * sign
    assert np.allclose(expect, _truth(noise_free, "ta_star_beam"))
    assert _rel_err(r.spectra, expect) < 1e-4
    # the imbalance is far above the bar: T_A and T_B really differ by 2 eps
    assert np.max(np.abs(eps)) / np.max(truth) > 100 * 1e-4
    assert _rel_err(r.spectra, truth) > 100 * 1e-4
    assert abs(float(st.atm.pwv_mm[0, 0]) - 1.0) < 1e-4  # measured 3.4e-5 (the B OFFs' eps)


def test_per_dump_weights_have_no_shared_reference_term(noise_free: Path) -> None:
    (st,) = run_stages(noise_free, CalibrationConfig())
    r, p = st.result, st.prepared
    exptime = st.data.meta.exptime
    assert np.array_equal(p.ref_dump_time_s, exptime[p.ref_per_dump])
    assert r.attrs["reference"]["shared_variance_fraction"] == [0.0] * 4
    # weight = dnu / (t_sys^2 (1 / t_on + 1 / t_off_dump)): one OFF dump per ON dump
    dnu = abs(float(st.data.meta.freq_res[0]))
    t_on = exptime[p.on_index]
    expect = dnu / (r.t_sys.astype(np.float64) ** 2 * (1 / t_on + 1 / p.ref_dump_time_s))
    ok = np.isfinite(expect)
    assert np.allclose(r.weight[ok], expect[ok], rtol=1e-5)


def test_merged_pairs_recover_truth(noise_free: Path) -> None:
    (single,) = run_stages(noise_free, CalibrationConfig())
    (st,) = run_stages(noise_free, CalibrationConfig(dbs_merge=True))
    r, a = st.result, single.result
    truth = _truth(noise_free, "ta_star")
    assert r.spectra.shape[-1] == 2
    assert _rel_err(r.spectra, truth[..., [0, 2]]) < 1e-4  # the imbalance cancels
    assert np.allclose(truth[..., [0, 2]], truth[..., [1, 3]])  # the source in both beams
    dbs = r.attrs["dbs"]
    assert dbs["merged"] and dbs["beam"] == ["AB", "AB"]
    assert dbs["pairs"] == [[0, 2], [4, 6]] and dbs["subscan_b"] == [2, 6]
    assert r.attrs["reference"]["on_index"] == [0, 4]
    ia, ib = [0, 2], [1, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = 4 / (1 / a.weight[..., ia].astype(np.float64) + 1 / a.weight[..., ib])
        t = np.sqrt((a.t_sys[..., ia].astype(np.float64) ** 2 + a.t_sys[..., ib] ** 2) / 2)
    assert np.allclose(r.weight, w, rtol=1e-6, equal_nan=True)
    assert np.allclose(r.t_sys, t, rtol=1e-6, equal_nan=True)
    assert np.array_equal(r.flags, a.flags[..., ia] | a.flags[..., ib])
    assert np.allclose(r.otf_lon, (a.otf_lon[:, ia] + a.otf_lon[:, ib]) / 2)
    assert np.allclose(r.otf_lon, a.otf_lon[:, ia])  # the simulator: one track for A and B
    assert np.array_equal(r.mjd, a.mjd[:, ia])
    assert np.allclose(r.exptime, a.exptime[ia] + a.exptime[ib])
    assert np.allclose(r.tr_signal, (a.tr_signal[:, ia] + a.tr_signal[:, ib]) / 2)


def test_per_dump_subtraction_is_needed_with_sky_fluctuation(noise_free: Path) -> None:
    """Dump d of the ON minus dump d of its chop partner cancels a sky that varies per dump;
    the dump average of the OFF (the tp / otf reference) leaves it in every dump."""
    (st,) = run_stages(noise_free, CalibrationConfig())
    averaged = dataclasses.replace(st.prepared, ref_per_dump=None, ref_dump_time_s=None,
                                   beam=None)
    r_avg = stages.calibrate(st.data, st.load, averaged, st.atm, CalibrationConfig())
    expect = _truth(noise_free, "ta_star_beam")
    fluct = _truth(noise_free, "sky_fluctuation")
    assert np.std(fluct) > 0.005
    per_dump, dump_avg = _rel_err(st.result.spectra, expect), _rel_err(r_avg.spectra, expect)
    assert per_dump < 1e-4
    assert dump_avg > 0.5  # ~1 % of a ~100 K sky per dump against a 2 K line
    # without the fluctuation both references agree
    flat = _session(noise_free.parent / "flat.zarr", sky_fluctuation=0.0)
    (st2,) = run_stages(flat, CalibrationConfig())
    averaged = dataclasses.replace(st2.prepared, ref_per_dump=None, ref_dump_time_s=None,
                                   beam=None)
    r2 = stages.calibrate(st2.data, st2.load, averaged, st2.atm, CalibrationConfig())
    assert _rel_err(r2.spectra, _truth(flat, "ta_star_beam")) < 1e-4


def test_noise_no_bias_in_merged_line_integral(tmp_path: Path) -> None:
    """20 seeds: the line integral of the merged spectra (mean over dumps, pixels, pairs) is
    unbiased within 3 standard errors; the per-beam integrals carry +-sum(eps)."""
    diffs, beam_a = [], []
    for seed in range(20):
        path = make_session(tmp_path / f"n{seed}.zarr", **TINY, seed=seed, noise=True,
                            beam_imbalance_k=0.05, sky_fluctuation=0.01)
        (st,) = run_stages(path, CalibrationConfig(dbs_merge=True))
        truth = _truth(path, "ta_star")[..., [0, 2]]
        line = np.mean(truth, axis=(1, 2, 3, 4)) > 0.01 * truth.max()
        got = np.nanmean(st.result.spectra[line], axis=(1, 2, 3, 4)).sum()
        diffs.append(got - np.mean(truth[line], axis=(1, 2, 3, 4)).sum())
        (single,) = run_stages(path, CalibrationConfig())
        beam_a.append(np.nanmean(single.result.spectra[line][..., [0, 2]],
                                 axis=(1, 2, 3, 4)).sum()
                      - np.mean(_truth(path, "ta_star_beam")[line][..., [0, 2]],
                                axis=(1, 2, 3, 4)).sum())
    d = np.asarray(diffs)
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert abs(d.mean()) < 3 * se, (d.mean(), se)
    a = np.asarray(beam_a)  # beam A against its own truth (T_A* + eps): unbiased too
    assert abs(a.mean()) < 3 * a.std(ddof=1) / np.sqrt(a.size)


# -- detection and layouts ------------------------------------------------------------------

@pytest.mark.parametrize("sobsmode, instmode, override, expect", [
    (["SWA-ON", "SWA-OFF", "SWB-ON", "SWB-OFF"], "OTF", "auto", CHOPPED),
    (["OTFSWA-ON", "OTFSWA-OFF", "OTFSWB-ON", "OTFSWB-OFF"], "", "auto", CHOPPED),
    (["OTF-ON", "OTF-OFF"], "otf-chop", "auto", CHOPPED),
    (["ON", "OFF"], "DBS", "auto", CHOPPED),
    (["OTF-ON", "OTF-OFF"], "OTF", "auto", "otf"),
    (["ON", "OFF"], "TP", "auto", "tp"),
    (["ON", "OFF"], "TP", "otf-chopped", CHOPPED),
    (["SWA-ON", "SWA-OFF"], "", "otf", "otf"),
])
def test_detect_mode(sobsmode: list[str], instmode: str, override: str, expect: str) -> None:
    assert detect_mode(np.array(sobsmode), instmode, override) == expect


def test_otf_prefix_spelling_and_override(noise_free: Path, tmp_path: Path) -> None:
    import shutil

    (ref,) = run_stages(noise_free, CalibrationConfig())
    copy = tmp_path / "otfsw.zarr"
    shutil.copytree(noise_free, copy)
    modes = read_array(copy, SCAN, "source/sobsmode")
    replace_array(copy, SCAN, "source/sobsmode", np.array([f"OTF{m}" for m in modes]))
    replace_array(copy, SCAN, "source/sobsmode", np.array([f"OTF{m}" for m in modes]))
    for config in (CalibrationConfig(), CalibrationConfig(mode="otf-chopped")):
        (st,) = run_stages(copy, config)
        assert np.array_equal(st.result.spectra, ref.result.spectra, equal_nan=True)
    # the Snakemake prepare job reads only the OFF chop phases
    assert off_subscans(np.array([f"OTF{m}" for m in modes])).tolist() == [1, 3, 5, 7]


def _break(noise_free: Path, tmp_path: Path, modes: list[str] | None = None) -> Path:
    import shutil

    copy = tmp_path / "broken.zarr"
    shutil.copytree(noise_free, copy)
    if modes is not None:
        replace_array(copy, SCAN, "source/sobsmode", np.array(modes))
    return copy


def _prepare(path: Path, config: CalibrationConfig = CalibrationConfig()) -> Any:
    data = open_session(path).load_scan(SCAN)
    return stages.prepare(data, config)


@pytest.mark.parametrize("modes, match", [
    (["SWA", "SWA", "SWB", "SWB"] * 2, "scan 1001.*source/sobsmode.*'SWA' without its chop"),
    (["OTFSWA-ON", "OTFSWA", "SWB-ON", "SWB-OFF"] * 2, "'OTFSWA' without its chop phase"),
    (["SWA-ON", "SWA-OFF", "SWB-ON", "SWB-ON"] * 2, "beam B has 4 ON and 0 OFF"),
    (["SWA-ON", "SWA-OFF", "OTF-ON", "OTF-OFF"] * 2, "subscan 2 has sobsmode 'OTF-ON'"),
])
def test_malformed_chop_layouts(noise_free: Path, tmp_path: Path, modes: list[str],
                                match: str) -> None:
    with pytest.raises(MetadataError, match=match) as err:
        _prepare(_break(noise_free, tmp_path, modes))
    assert err.value.scan == SCAN and err.value.array == "source/sobsmode"


def test_chopped_instmode_without_chop_subscans(noise_free: Path, tmp_path: Path) -> None:
    """The simulator's instmode OTF-DBS marks the scan chopped: OTF-ON / OTF-OFF subscans are
    then a layout error, in auto mode and with the override."""
    path = _break(noise_free, tmp_path, ["OTF-ON", "OTF-OFF"] * 4)
    assert open_session(path).attrs(SCAN)["instmode"] == "OTF-DBS"
    for mode in ("auto", "otf-chopped"):
        with pytest.raises(MetadataError, match="subscan 0 has sobsmode 'OTF-ON'"):
            _prepare(path, CalibrationConfig(mode=mode))  # type: ignore[arg-type]


def test_pair_with_different_dump_counts(noise_free: Path, tmp_path: Path) -> None:
    path = _break(noise_free, tmp_path)
    counts = read_array(path, SCAN, "source/data_5d")
    counts[:, -1, ..., 3] = FILL_VALUE  # the last dump of SWB-OFF (partner of subscan 2)
    replace_array(path, SCAN, "source/data_5d", counts)
    with pytest.raises(MetadataError, match="ON subscan 2 / OFF subscan 3: 4 and 3 recorded"):
        run_stages(path, CalibrationConfig())


def test_merge_needs_as_many_a_as_b(noise_free: Path, tmp_path: Path) -> None:
    modes = ["SWA-ON", "SWA-OFF", "SWB-ON", "SWB-OFF", "SWA-ON", "SWA-OFF", "SWA-ON", "SWA-OFF"]
    path = _break(noise_free, tmp_path, modes)
    (st,) = run_stages(path, CalibrationConfig())  # unmerged: 3 A, 1 B is fine
    assert st.result.attrs["dbs"]["beam"] == ["A", "B", "A", "A"]
    with pytest.raises(MetadataError, match="beam A has 3 and beam B 1 ON"):
        run_stages(path, CalibrationConfig(dbs_merge=True))


def test_config_and_cli_options() -> None:
    from calpipe.cli import build_config, build_parser

    with pytest.raises(ConfigError, match="dbs_merge"):
        CalibrationConfig(dbs_merge="yes")  # type: ignore[arg-type]
    ns = build_parser().parse_args(["calibrate", "in.zarr", "out.zarr", "--mode",
                                    "otf-chopped", "--dbs-merge"])
    config = build_config(ns)
    assert config.mode == "otf-chopped" and config.dbs_merge is True
    assert build_config(build_parser().parse_args(["calibrate", "a", "b"])).dbs_merge is False


# -- L1 and the two orchestration modes ------------------------------------------------------

def test_l1_beam_coordinate_in_xarray(noise_free: Path, tmp_path: Path) -> None:
    table = analytic_table()
    out = tmp_path / "l1.zarr"
    calibrate_store(noise_free, out, CalibrationConfig(), table=table)
    ds = l1.open_scan(out, SCAN)
    assert ds.attrs["mode"] == CHOPPED
    assert ds.beam.dims == ("subscan",) and ds.beam.values.tolist() == ["A", "B", "A", "B"]
    assert "beam" in ds.t_sys.coords
    beam_of_dump = ds.beam.sel(subscan=ds.time_subscan)  # beam on the time axis
    a = ds.spectra.where(beam_of_dump == "A", drop=True)
    assert a.sizes["time"] == 2 * 4
    assert set(a.time_subscan.values.tolist()) == {0, 4}
    assert "subscan_b" not in ds.coords
    merged = tmp_path / "merged.zarr"
    calibrate_store(noise_free, merged, CalibrationConfig(dbs_merge=True), table=table)
    dm = l1.open_scan(merged, SCAN)
    assert dm.beam.values.tolist() == ["AB", "AB"]
    assert dm.subscan.values.tolist() == [0, 4] and dm.subscan_b.values.tolist() == [2, 6]
    # a non-chopped scan has neither coordinate
    plain = make_session(tmp_path / "plain.zarr", **{**TINY, "modes": ("otf",)})
    calibrate_store(plain, tmp_path / "plain_l1.zarr", CalibrationConfig(), table=table)
    dp = l1.open_scan(tmp_path / "plain_l1.zarr", SCAN)
    assert "beam" not in dp.coords and "dbs" not in dp.attrs


def test_truth_attributes(noise_free: Path) -> None:
    attrs = _truth_attrs(noise_free)
    assert attrs["kind"] == "otf-chopped" and attrs["beam"] == ["A", "B", "A", "B"]
    assert attrs["on_index"] == [0, 2, 4, 6] and attrs["partner"] == [1, 3, 5, 7]


def test_both_orchestration_modes_agree(tmp_path: Path) -> None:
    from calpipe.atmosphere.tableio import save_table

    save_table(analytic_table(), tmp_path / "table.npz")
    _session(tmp_path / "s.zarr", noise=True, n_scans=3, load_every=3)
    inproc, workflow = calibrate_both_modes(tmp_path, {"atmosphere_table": "table.npz",
                                                       "dbs_merge": True})
    assert l1.list_scans(inproc) == [1001, 1002]
    assert_l1_equal(inproc, workflow)
    assert l1.open_scan(workflow, 1002).subscan_b.values.tolist() == [2, 6]


def test_gain_interpolate_corrects_on_and_partner_dumps(tmp_path: Path) -> None:
    """gain_interpolate 3 on a chopped scan: the ONs and their chop partners are corrected
    dump by dump (10 %/h drift through the session); each beam to 1e-4 of the peak."""
    from calpipe.pipeline import load_next_calibration

    path = _session(tmp_path / "drift.zarr", n_scans=4, load_every=3, gain_drift_per_hour=0.1,
                    gain_drift_reset=False, scan_seconds=300.0)
    config = CalibrationConfig(sky_model="zenith", gain_interpolate=3)
    session = open_session(path)
    for n in (1001, 1002):
        scan = session.load_scan(n)
        cal = session.load_calibration(n, scan.meta.lloadsn)
        load = stages.resolve(scan, cal, config, load_next_calibration(session, n, cal.scan,
                                                                        config))
        prepared = stages.prepare(scan, config)
        atm = stages.atmosphere(stages.ScanGeometry.of(scan), load, prepared, config,
                                analytic_table())
        result = stages.calibrate(scan, load, prepared, atm, config)
        assert result.attrs["gain_drift"]["next_calibration_scan"] == 1003
        assert _rel_err(result.spectra, _truth(path, "ta_star_beam", n)) < 1e-4
        off = stages.calibrate(scan, stages.resolve(scan, cal, CalibrationConfig(
            sky_model="zenith")), prepared, atm, config)
        assert _rel_err(off.spectra, _truth(path, "ta_star_beam", n)) > 1e-3  # uncorrected


def test_merge_on_the_tmb_scale(noise_free: Path) -> None:
    """The merge after the T_mb scaling: the per-pair factor is the mean of the A and B
    factors (equal here: one elevation per scan) and the merged T_mb is K x merged T_A*."""
    config = CalibrationConfig(dbs_merge=True, scale="tmb", eta_mb=0.8)
    (tmb,) = run_stages(noise_free, config)
    (ta,) = run_stages(noise_free, CalibrationConfig(dbs_merge=True))
    factor = np.asarray(tmb.result.attrs["scale"]["factor"])  # [A, pairs]
    assert factor.shape == (2, 2) and np.allclose(factor, 0.95 / 0.8)
    expect = ta.result.spectra * factor[None, None, None, :, :]
    assert np.allclose(tmb.result.spectra, expect, rtol=1e-6, equal_nan=True)


# -- review findings: the merge's usability and QA, simultaneous chop phases ------------------

def test_merge_that_leaves_no_sample_is_a_scan_error(noise_free: Path, tmp_path: Path) -> None:
    """Array 0 missing in the A ONs, array 1 in the B ONs: each beam alone is usable, but
    every merged pair ORs a fill flag: NoValidDataError, never an all-NaN success."""
    from calpipe.errors import NoValidDataError

    path = _break(noise_free, tmp_path)
    counts = read_array(path, SCAN, "source/data_5d")
    for s in (0, 4):  # SWA-ON
        counts[:, :, :, 0, s] = FILL_VALUE
    for s in (2, 6):  # SWB-ON
        counts[:, :, :, 1, s] = FILL_VALUE
    replace_array(path, SCAN, "source/data_5d", counts)
    (st,) = run_stages(path, CalibrationConfig())
    assert 0 < np.isfinite(st.result.spectra).mean() < 1
    with pytest.raises(NoValidDataError, match="no usable sample"):
        run_stages(path, CalibrationConfig(dbs_merge=True))


def test_qa_describes_the_merged_spectra(noise_free: Path) -> None:
    (st,) = run_stages(noise_free, CalibrationConfig(dbs_merge=True))
    qa = st.result.attrs["qa"]
    n_pairs = st.result.spectra.shape[-1]
    assert n_pairs == 2
    assert np.asarray(qa["tsys_spectrum_k"]).shape[-1] == n_pairs
    assert all(s < n_pairs for _r, _a, s in qa["tsys_outliers"])


def test_chop_phases_must_be_simultaneous(noise_free: Path, tmp_path: Path) -> None:
    path = _break(noise_free, tmp_path)
    mjd = read_array(path, SCAN, "source/mjd")
    mjd[3] += 10.0 / 86400.0  # SWB-OFF 10 s after its ON (dumps of 0.5 s)
    mjd[4:] += 20.0 / 86400.0  # keep the start times increasing
    replace_array(path, SCAN, "source/mjd", mjd)
    with pytest.raises(MetadataError, match="ON subscan 2 / OFF subscan 3 start 10 s apart"):
        _prepare(path)
