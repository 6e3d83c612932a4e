"""Per-channel (and per-pixel) sideband gains (issue 13, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from calpipe import stages
from calpipe.config import CalibrationConfig
from calpipe.errors import L0FormatError
from calpipe.l0 import open_session, scan_group_name
from calpipe.simulate import SimulationConfig, sideband_gains, truth_path_for
from calpipe.testing import delete_array, make_session, run_stages, small_config


def _run(path, config):
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    out = [(s.load, s.atm, s.result, truth[scan_group_name(s.scan)]["ta_star"][...])
           for s in run_stages(path, config)]
    return out, truth


def _max_rel_error(out):
    return max(float(np.abs(res.spectra - ta).max() / np.abs(ta).max())
               for _, _, res, ta in out)


@pytest.mark.parametrize("sideband", ["dsb", "2sb"])
@pytest.mark.parametrize("spread", [0.0, 0.15])
def test_noise_free_recovery_with_if_dependent_ratio(tmp_path, sideband, spread):
    """A 20 % ratio change across the IF (and +-15 % between pixels), given per channel in
    L0: T_A* to 1e-4, T_rec and gamma to 1e-6, pwv to 1e-3."""
    path = make_session(tmp_path / "s.zarr", noise=False, sideband=sideband, n_scans=3,
                        load_every=3, frequency_ghz=345.796, sideband_ratio_slope=0.2,
                        sideband_ratio_pixel_spread=spread)
    out, truth = _run(path, CalibrationConfig())
    assert _max_rel_error(out) <= 1e-4
    for load, atm, res, _ in out:
        np.testing.assert_allclose(load.t_rec, truth["t_rec"][...], rtol=1e-6)
        np.testing.assert_allclose(load.gamma, truth["gamma"][...], rtol=1e-6)
        assert atm.pwv_mm[0, 0] == pytest.approx(1.0, rel=1e-3)
        assert res.attrs["instrument"]["gs_xs"]["per_channel"] is True
    # the same data calibrated with the nominal (band-centre) scalar ratio: the line sits
    # within +-10 % of the band centre, where the true ratio is within +-2 % (+ the pixel
    # spread) of nominal -- already > 20x the per-channel error
    for name in ("source/gs_xs", "source/gi_xi"):
        for n in open_session(path).source_scans():
            delete_array(path, n, name)
    scalar, _ = _run(path, CalibrationConfig())
    assert _max_rel_error(scalar) > 20 * max(_max_rel_error(out), 1e-5), _max_rel_error(scalar)


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_gains_from_a_calibration_file_by_if(tmp_path, fmt):
    cfg = small_config(noise=False, sideband="2sb", n_scans=2, load_every=2,
                       sideband_ratio_slope=0.3)
    path = make_session(tmp_path / "s.zarr", **{k: getattr(cfg, k) for k in
                                                ("noise", "sideband", "n_scans", "load_every",
                                                 "sideband_ratio_slope")})
    for n in open_session(path).source_scans():
        for name in ("source/gs_xs", "source/gi_xi"):
            delete_array(path, n, name)
    gs, gi = sideband_gains(cfg)
    # channel IF: |nu_sig - nu_img| / 2 = IF0 + (c - ref) freq_res; the file samples it coarsely
    c = np.arange(cfg.n_channels)
    if_ghz = cfg.if_ghz + (c - cfg.n_channels / 2.0) * cfg.freq_res_hz / 1e9
    pick = np.r_[0:cfg.n_channels:37, cfg.n_channels - 1]
    file = tmp_path / f"gains.{fmt}"
    if fmt == "npz":
        np.savez(file, if_ghz=if_ghz[pick], gs_xs=gs[pick], gi_xi=gi[pick])
    else:
        rows = "\n".join(f"{a:.12f},{b:.12f},{d:.12f}" for a, b, d in
                         zip(if_ghz[pick], gs[pick], gi[pick], strict=True))
        file.write_text("# test gains\nif_ghz,gs_xs,gi_xi\n" + rows + "\n")
    out, _ = _run(path, CalibrationConfig(sideband_gains_file=str(file)))
    assert _max_rel_error(out) <= 1e-4
    assert "file" in str(stages.instrument_parameters(
        open_session(path).load_scan(open_session(path).source_scans()[0]),
        CalibrationConfig(sideband_gains_file=str(file))).source["gs_xs"])


def test_l0_gains_need_both_arrays(tmp_path):
    path = make_session(tmp_path / "s.zarr", n_scans=2, load_every=2,
                        sideband_ratio_slope=0.2)
    n = open_session(path).source_scans()[0]
    delete_array(path, n, "source/gi_xi")
    with pytest.raises(L0FormatError, match="both gs_xs and gi_xi"):
        open_session(path).load_scan(n)


def test_simulated_ratio_is_if_dependent():
    cfg = SimulationConfig(sideband="dsb", sideband_ratio_slope=0.2, n_channels=100)
    gs, gi = sideband_gains(cfg)
    ratio = gi / gs
    assert ratio[0] == pytest.approx(0.9) and ratio[-1] == pytest.approx(1.098)
