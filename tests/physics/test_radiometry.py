"""J(nu, T), dJ/dT and sideband weighting (calpipe.physics.radiometry)."""

import numpy as np
import pytest

from calpipe.physics.radiometry import (
    EXACT,
    H_PLANCK,
    K_BOLTZMANN,
    PhysicsConstants,
    rj_brightness,
    rj_brightness_dt,
    sideband_weighted,
)


def test_rj_brightness_matches_planck_formula():
    nu, t = 345e9, 20.0
    x = H_PLANCK * nu / (K_BOLTZMANN * t)
    expected = (H_PLANCK * nu / K_BOLTZMANN) / np.expm1(x)
    assert rj_brightness(nu, t) == pytest.approx(expected, rel=1e-14)


def test_rj_brightness_tends_to_t_minus_half_hnu_over_k():
    # high-temperature limit: J -> T - h nu / 2k
    nu, t = 230e9, 1e6
    assert rj_brightness(nu, t) == pytest.approx(t - 0.5 * EXACT.h_over_k * nu, rel=1e-9)


def test_small_x_branch_is_continuous():
    nu = 1e3  # x = h nu / kT ~ 1.6e-10 at 300 K: uses the series form
    t = np.array([300.0, 300.0 * 1.0001])
    j = rj_brightness(nu, t)
    assert np.all(np.isfinite(j))
    assert j == pytest.approx(t - 0.5 * EXACT.h_over_k * nu, rel=1e-14)


def test_derivative_matches_finite_difference():
    nu, t, h = 690e9, 150.0, 1e-3
    fd = (rj_brightness(nu, t + h) - rj_brightness(nu, t - h)) / (2 * h)
    assert rj_brightness_dt(nu, t) == pytest.approx(fd, rel=1e-7)


def test_kalibrate_compat_uses_rounded_constant_in_float32():
    compat = PhysicsConstants.for_mode("kalibrate-compat")
    assert compat.h_over_k == pytest.approx(0.047995e-9)
    j_exact = rj_brightness(460e9, 40.0)
    j_compat = rj_brightness(460e9, 40.0, compat)
    # h/k differs by 1e-5 relative; float32 adds ~1e-7: the two agree to ~1e-4 but not exactly
    assert j_compat == pytest.approx(j_exact, rel=1e-4)
    assert j_compat != j_exact


def test_sideband_weighting():
    nu_s, nu_i = np.array([230e9]), np.array([218e9])
    t = sideband_weighted(nu_s, nu_i, 293.0, 0.5)
    expected = 0.5 * rj_brightness(nu_s, 293.0) + 0.5 * rj_brightness(nu_i, 293.0)
    np.testing.assert_allclose(t, expected, rtol=1e-15)
    ssb = sideband_weighted(nu_s, nu_i, 293.0, 1.0)
    np.testing.assert_allclose(ssb, rj_brightness(nu_s, 293.0), rtol=1e-15)


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        PhysicsConstants.for_mode("approximate")
