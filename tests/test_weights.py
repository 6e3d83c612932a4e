"""Weights from the radiometer equation with the reference noise (issue 13, item 4).

sigma^2 per dump = t_sys^2 / dnu_eff [1 / t_on + (1 - w)^2 / t_lo + w^2 / t_hi].

How chi^2 is computed. The D dumps of one ON subscan share one interpolated reference, so
their errors are correlated: cov(d, d') = t_sys^2 / dnu_eff * ref for d != d', with
ref = (1 - w)^2 / t_lo + w^2 / t_hi. The variance of the dump average is therefore
sigma^2 [(1 - rho) / D + rho] with rho = ref / (1 / t_on + ref) (the shared fraction, which
the L1 attributes record as reference.shared_variance_fraction) -- not sigma^2 / D. We test
the dump-averaged spectra against that variance, and the single dumps against sigma^2, on
noise-only simulations (no line: the truth is T_A* = 0 everywhere). The estimate is a mean of
~2-6 k squared normal deviates per case (correlated only between ONs that share an OFF),
so its own scatter is ~2-3 %: well inside the 5 % bar, and the old weights (no reference
term; chi^2 = 1.5 for TP with equal ON / OFF times, 2 for nearest) fail it clearly.
"""

from __future__ import annotations

import numpy as np
import pytest

from calpipe import stages
from calpipe.config import CalibrationConfig
from calpipe.l0 import open_session
from calpipe.physics.calibrate import radiometer_weight
from calpipe.physics.reference import reference_variance_factor
from calpipe.testing import make_session, run_stages


def _chi2(path, config):
    """(chi^2/dof of dump averages with the covariance, of single dumps, of dump averages
    with the first release's weights, which leave the reference out)."""
    z_mean, z_dump, z_naive = [], [], []
    for st in run_stages(path, config):
        res, scan = st.result, st.data
        n_d = res.spectra.shape[1]
        rho = np.asarray(res.attrs["reference"]["shared_variance_fraction"])
        var_dump = 1.0 / res.weight.astype(np.float64)  # [C, R, A, S_on]
        var_mean = var_dump * ((1.0 - rho) / n_d + rho)
        spectra = res.spectra.astype(np.float64)
        mean = spectra.mean(axis=1)  # [C, R, A, S_on]
        z_mean.append((mean**2 / var_mean).ravel())
        z_dump.append((spectra**2 / var_dump[:, None]).ravel())
        # the first release's weight freq_res * exptime / t_sys^2 (no reference noise)
        old = abs(float(scan.meta.freq_res[0])) * res.exptime / res.t_sys.astype(np.float64)**2
        z_naive.append((mean**2 * old * n_d).ravel())
    return tuple(float(np.mean(np.concatenate(z))) for z in (z_mean, z_dump, z_naive))


@pytest.mark.parametrize("reference", ["linear", "nearest"])
@pytest.mark.parametrize("mode", ["tp", "otf"])
def test_chi2_of_dump_averaged_noise_is_one(tmp_path, mode, reference):
    path = make_session(tmp_path / "s.zarr", seed=11, n_scans=4, load_every=4, modes=(mode,),
                        line_peak_k=0.0, n_channels=512, n_dumps=8, pwv_mm=1.0)
    config = CalibrationConfig(reference=reference)
    chi_mean, chi_dump, chi_naive = _chi2(path, config)
    assert chi_mean == pytest.approx(1.0, abs=0.05), (mode, reference, chi_mean)
    assert chi_dump == pytest.approx(1.0, abs=0.05), (mode, reference, chi_dump)
    # the first release's weights: the dump averages scatter more than they say
    assert chi_naive > 1.3


def test_noise_bandwidth_factor_scales_weights(tmp_path):
    path = make_session(tmp_path / "s.zarr", seed=3, n_scans=2, load_every=2, modes=("tp",),
                        line_peak_k=0.0, n_channels=512, n_dumps=8)
    one = _chi2(path, CalibrationConfig())[0]
    two = _chi2(path, CalibrationConfig(noise_bandwidth_factor=2.0))[0]
    assert two == pytest.approx(2.0 * one, rel=1e-4)  # weight ~ dnu_eff, chi^2 ~ weight


def test_weight_formula_against_hand_computation():
    t_sys = np.array([[100.0, 200.0]])
    ref = reference_variance_factor(np.array([0.25, 0.0]), np.array([4.0, 2.0]),
                                    np.array([8.0, 3.0]))
    np.testing.assert_allclose(ref, [0.75**2 / 4 + 0.25**2 / 8, 1 / 2.0])
    w = radiometer_weight(t_sys, 1e6, np.array([0.5, 1.0]), ref)
    expect = 1e6 / (t_sys**2 * (1 / np.array([0.5, 1.0]) + ref))
    np.testing.assert_allclose(w, expect)


def test_prepared_exposes_weight_and_off_times(tmp_path):
    path = make_session(tmp_path / "s.zarr", n_scans=2, load_every=2, modes=("otf",),
                        n_dumps=4, exptime_s=0.5)
    scan = open_session(path).load_scan(open_session(path).source_scans()[0])
    p = stages.prepare(scan, CalibrationConfig())
    np.testing.assert_allclose(p.ref_weight, [0.25, 0.5, 0.75])  # OFF ON ON ON OFF
    np.testing.assert_allclose(p.t_lo, 2.0)
    np.testing.assert_allclose(p.t_hi, 2.0)
    near = stages.prepare(scan, CalibrationConfig(reference="nearest"))
    np.testing.assert_array_equal(near.ref_weight, 0.0)
    np.testing.assert_allclose(near.reference_variance_factor(), 1 / 2.0)
