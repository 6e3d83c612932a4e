"""The worked example of docs/physics.md, every row checked against the library.

The inputs (frequencies, temperatures, pwv, elevation, pressure, f_eff, w_s) and every value
of the table are parsed out of docs/physics.md; each value is then produced by the library
function that the pipeline uses (loads from synthetic load counts with ``resolve_loads``, the
sky from ``SkyModel``, transmission from ``transmissions``, T_sys and T_A* from
``calibrate_full``), never by re-doing the arithmetic here. A value must agree to half a unit
in its last written digit; a row that no check claims fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from calpipe.physics.atmosphere import SkyInputs, SkyModel, airmass, transmissions
from calpipe.physics.calibrate import calibrate_full
from calpipe.physics.loads import resolve_loads
from calpipe.physics.radiometry import EXACT, rj_brightness, sideband_weighted
from calpipe.simulate import SimulationConfig, _Instrument
from calpipe.testing import analytic_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "physics.md"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
N_CH = 32  # identical channels (the bad-channel rule needs a few)


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## Worked example")
    return text[start:text.index("\n## ", start + 1)]


def _rows() -> list[tuple[str, list[str]]]:
    """(quantity, value strings) of every row of the worked-example table."""
    rows = []
    for line in _section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("quantity", "---") or set(cells[1]) <= {"-"}:
            continue
        rows.append((cells[0], NUMBER.findall(cells[1])))
    return rows


def _given(pattern: str) -> float:
    """An input of the example, from the prose above the table."""
    m = re.search(pattern, " ".join(_section().split()))
    assert m, pattern
    return float(m.group(1))


def _close(doc: str, value: float) -> bool:
    """``value`` rounds to the doc's ``doc`` (half a unit of its last digit, plus 1e-9)."""
    mantissa, _, exponent = doc.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    tol = 0.5 * 10.0 ** (-decimals) * 10.0 ** int(exponent or 0)
    return abs(value - float(doc)) <= tol * (1 + 1e-9) + 1e-12


@pytest.fixture(scope="module")
def example() -> dict[str, float]:
    """Every quantity of the table, computed by the library from the documented inputs."""
    nu_s = _given(r"Worked example \((\d+\.\d+) GHz") * 1e9
    nu_i = _given(r"image at (\d+\.\d+) GHz") * 1e9
    pwv = _given(r"pwv (\d+(?:\.\d+)?) mm")
    el_deg = _given(r"el (\d+(?:\.\d+)?) deg")
    p_hpa = _given(r"P = (\d+(?:\.\d+)?) hPa")
    t_amb = _given(r"T_amb = (\d+(?:\.\d+)?) K")
    f_eff = _given(r"f_eff = (\d+(?:\.\d+)?)")
    t_hot = _given(r"T_hot = (\d+(?:\.\d+)?) K")
    t_cold = _given(r"T_cold = (\d+(?:\.\d+)?) K")
    t_rec = _given(r"T_rec,SSB = (\d+(?:\.\d+)?) K")
    w_s = _given(r"w_s = (\d+(?:\.\d+)?)")
    nu = np.full(N_CH, nu_s)
    nu_img = np.full(N_CH, nu_i)
    out: dict[str, float] = {}
    out["J_s"] = float(rj_brightness(np.array([nu_s]), t_hot)[0])
    out["J_i"] = float(rj_brightness(np.array([nu_i]), t_hot)[0])
    out["T'_hot"] = float(sideband_weighted(nu, nu_img, t_hot, w_s)[0])
    out["T'_cold"] = float(sideband_weighted(nu, nu_img, t_cold, w_s)[0])
    # the simulator's gain, and load counts made from the documented temperatures
    inst = _Instrument(SimulationConfig(), analytic_table())
    gamma = float(np.mean(inst.gamma))
    out["gamma"] = gamma
    t_rec_dsb_in = w_s * t_rec
    counts = np.empty((N_CH, 1, 1, 1, 2))
    counts[..., 0] = gamma * (t_rec_dsb_in + out["T'_hot"])
    counts[..., 1] = gamma * (t_rec_dsb_in + out["T'_cold"])
    gs = 2 * w_s * 0.5  # DSB: g_s x_s = g_i x_i (w_s = 0.5)
    load = resolve_loads(scan=1, cal_scan=1, counts=counts, sobsmode=np.array(["HOT", "COLD"]),
                         thot=np.array([t_hot, t_hot]), tcold=np.array([t_cold, t_cold]),
                         nu_sig=nu, nu_img=nu_img, gs_xs=gs, gi_xi=gs, f_eff=f_eff,
                         constants=EXACT)
    assert not load.bad_channel.any()
    out["T'_rec"] = float(load.t_rec_dsb[0, 0, 0])
    out["T_rec"] = float(load.t_rec[0, 0, 0])
    out["y"] = float(load.c_hot[0, 0, 0] / load.c_cold[0, 0, 0])
    out["gamma_loads"] = float(load.gamma[0, 0, 0])
    # the sky at pwv, elevation, pressure (analytic table)
    table = analytic_table()
    slab_s, slab_i = table.slab(nu, p_hpa), table.slab(nu_img, p_hpa)
    el = np.radians([el_deg])
    out["airmass"] = float(airmass(el)[0])
    out["tau_s"] = float(slab_s.evaluate(pwv)[0][0])
    out["tau_i"] = float(slab_i.evaluate(pwv)[0][0])
    sky = SkyModel(SkyInputs(nu, nu_img, w_s, f_eff, 2.725, EXACT), slab_s, slab_i, el,
                   np.array([t_amb]), use_model_t_atm=True)
    out["T_sky_s"] = float(sky.sidebands[0].tsky(pwv)[0, 0])
    out["T_sky_i"] = float(sky.sidebands[1].tsky(pwv)[0, 0])
    out["T'_sky"] = float(sky.tsky_eff(pwv)[0, 0])
    _, tr = transmissions(slab_s, np.array([[pwv]]), el)  # [C, 1, 1, S_on]
    out["tr_s"] = float(tr[0, 0, 0, 0])
    # one ON dump with a 2 K line on the documented sky, calibrated by calibrate_full
    c_ref = gamma * (out["T'_rec"] + out["T'_sky"])
    line = 2.0
    on = c_ref + gamma * w_s * f_eff * out["tr_s"] * line  # the counts of the line
    raw = np.empty((N_CH, 1, 1, 1, 2))
    raw[..., 0], raw[..., 1] = c_ref, on
    cal = calibrate_full(raw, np.array([1]), np.full((N_CH, 1, 1, 1), c_ref),
                         np.full((N_CH, 1, 1), gamma), np.zeros((N_CH, 1, 1), dtype=bool),
                         w_s, f_eff, tr, 1e6, np.array([1.0]))
    out["t_sys"] = float(cal.t_sys[0, 0, 0, 0])
    out["ta_line"] = float(cal.spectra[0, 0, 0, 0, 0])
    out["line_counts_over_gamma"] = (on - c_ref) / gamma
    return out


#: (start of the quantity cell, the computed quantities its values are, in order)
CHECKS: list[tuple[str, Callable[[dict[str, float]], list[float]]]] = [
    ("J(", lambda x: [x["J_s"], x["J_i"]]),
    ("T'_hot", lambda x: [x["T'_hot"]]),
    ("T'_cold", lambda x: [x["T'_cold"]]),
    ("T'_rec = 0.5", lambda x: [x["T'_rec"]]),
    ("y =", lambda x: [x["y"]]),
    ("T'_rec = (", lambda x: [x["T'_rec"], x["T_rec"]]),
    ("gamma", lambda x: [x["gamma"]]),
    ("airmass", lambda x: [x["airmass"]]),
    ("tr_s", lambda x: [x["tr_s"]]),
    ("T_sky(", lambda x: [x["T_sky_s"], x["T_sky_i"]]),
    ("T'_sky", lambda x: [x["T'_sky"]]),
    ("t_sys", lambda x: [x["t_sys"]]),
    ("a 2 K line", lambda x: [x["line_counts_over_gamma"]]),
]


def test_every_row_is_checked() -> None:
    rows = _rows()
    assert len(rows) == len(CHECKS) == 13
    for (quantity, values), (start, _) in zip(rows, CHECKS, strict=True):
        assert quantity.startswith(start), (quantity, start)
        assert values, quantity


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[c[0] for c in CHECKS])
def test_row(example: dict[str, float], index: int) -> None:
    quantity, values = _rows()[index]
    computed = CHECKS[index][1](example)
    assert len(values) == len(computed), quantity
    for doc, value in zip(values, computed, strict=True):
        assert _close(doc, value), f"{quantity}: docs say {doc}, the library gives {value:.6g}"


def test_prose_inputs_and_consistency(example: dict[str, float]) -> None:
    """The opacities quoted above the table, and the steps that close the loop: the loads
    give back the gain and T_rec put in, the calibration gives back the 2 K line."""
    assert _close(str(_given(r"tau_s = (\d\.\d+)")), example["tau_s"])
    assert _close(str(_given(r"tau_i = (\d\.\d+)")), example["tau_i"])
    assert example["gamma_loads"] == pytest.approx(example["gamma"], rel=1e-9)
    assert example["ta_line"] == pytest.approx(2.0, rel=1e-6)


def test_close_is_strict() -> None:
    assert _close("287.503", 287.5034) and not _close("287.503", 287.5036)
    assert _close("3.42e6", 3.424e6) and not _close("3.42e6", 3.426e6)
