"""The worked example of docs/physics.md, recomputed with the library (keeps the doc honest)."""

import numpy as np
import pytest

from calpipe.physics.atmosphere import SkyInputs, SkyModel
from calpipe.physics.radiometry import EXACT, rj_brightness, sideband_weighted
from calpipe.testing import analytic_table

NU_S, NU_I = np.array([230.538e9]), np.array([218.538e9])


def test_worked_example_numbers():
    table = analytic_table()
    slab_s, slab_i = table.slab(NU_S, 550.0), table.slab(NU_I, 550.0)
    assert slab_s.evaluate(1.0)[0][0] == pytest.approx(0.03455, abs=1e-5)
    assert rj_brightness(NU_S, 293.0)[0] == pytest.approx(287.503, abs=1e-3)
    t_hot = sideband_weighted(NU_S, NU_I, 293.0, 0.5)[0]
    t_cold = sideband_weighted(NU_S, NU_I, 80.0, 0.5)[0]
    assert (t_hot, t_cold) == pytest.approx((287.645, 74.733), abs=1e-3)
    y = (40.0 + t_hot) / (40.0 + t_cold)
    assert y == pytest.approx(2.85572, abs=1e-5)
    assert (t_hot - y * t_cold) / (y - 1) == pytest.approx(40.0, abs=1e-9)
    el = np.radians([60.0])
    sky = SkyModel(SkyInputs(NU_S, NU_I, 0.5, 0.95, 2.725, EXACT), slab_s, slab_i, el,
                   np.array([270.0]), use_model_t_atm=True)
    t_sky_eff = sky.tsky_eff(1.0)[0, 0]
    assert t_sky_eff == pytest.approx(22.372, abs=1e-3)
    tr_s = np.exp(-slab_s.evaluate(1.0)[0][0] / np.sin(el[0]))
    assert tr_s == pytest.approx(0.96089, abs=1e-5)
    assert (40.0 + t_sky_eff) / (0.5 * 0.95 * tr_s) == pytest.approx(136.65, abs=0.01)
