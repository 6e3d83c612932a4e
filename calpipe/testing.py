"""Builders shared by the tests (and usable by downstream projects): small synthetic sessions,
a fast analytic atmosphere table, and fault injectors that break a valid session in one way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.atmosphere.table import AtmosphereTable
from calpipe.simulate import SimulationConfig, simulate_session


def analytic_table(t_atm: bool = True) -> AtmosphereTable:
    """A smooth, cheap atmosphere table (80-1200 GHz, 150-800 hPa) for fast unit tests.

    tau = (P / 550 hPa) [c(nu) + b(nu) pwv + 0.01 b(nu) pwv^2], with b, c rising with frequency
    and a water line near 557 GHz; t_atm = 255 K + 3 K ln(pwv). Not a model of any site.
    """
    f = np.linspace(80e9, 1200e9, 1121)
    ghz = f / 1e9
    b = 0.02 * (ghz / 230.0) ** 2 + 2.0 * np.exp(-0.5 * ((ghz - 557.0) / 8.0) ** 2)
    c = 0.01 + 0.02 * (ghz / 500.0) ** 2
    pwv = np.geomspace(0.02, 12.0, 18)
    p = np.array([150.0, 300.0, 550.0, 800.0])
    tau = (p[:, None, None] / 550.0) * (c[None, None, :] + b[None, None, :] * pwv[None, :, None]
                                        + 0.01 * b[None, None, :] * pwv[None, :, None] ** 2)
    tatm = None
    if t_atm:
        tatm = np.broadcast_to(255.0 + 3.0 * np.log(pwv)[None, :, None], tau.shape).copy()
    return AtmosphereTable(f, pwv, p, tau, tatm, "analytic-test", {"purpose": "tests"})


def small_config(**changes: Any) -> SimulationConfig:
    """A session small enough for unit tests (a fraction of a second to simulate)."""
    base = SimulationConfig(n_scans=6, load_every=3, n_channels=256, n_dumps=4, n_receivers=2,
                            n_arrays=2, line_width_channels=6.0)
    return replace(base, **changes)


def make_session(path: str | Path, table: AtmosphereTable | None = None,
                 **changes: Any) -> Path:
    """Simulate a small session at ``path`` with the analytic table; returns the path."""
    path = Path(path)
    simulate_session(path, small_config(**changes), table=table or analytic_table(),
                     overwrite=True)
    return path
