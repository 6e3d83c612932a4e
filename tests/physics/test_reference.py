"""OFF references for ON subscans (calpipe.physics.reference)."""

import numpy as np
import pytest

from calpipe.errors import MetadataError, NoReferenceError
from calpipe.physics.reference import detect_mode, prepare_references, reference_indices


def _scan(modes, level_per_subscan, c=8, d=4):
    s = len(modes)
    counts = np.ones((c, d, 2, 1, s)) * np.asarray(level_per_subscan, float)
    mjd = 60000.0 + np.arange(s) * 10.0 / 86400.0
    return counts, np.array(modes), mjd, np.full(s, 0.5)


def test_linear_interpolation_between_bracketing_offs():
    counts, modes, mjd, exp = _scan(["OFF", "ON", "ON", "OFF"], [100, 0, 0, 130])
    p = prepare_references(scan=1, counts=counts, sobsmode=modes, mjd=mjd, exptime=exp)
    np.testing.assert_array_equal(p.on_index, [1, 2])
    np.testing.assert_allclose(p.c_ref[0, 0, 0], [110.0, 120.0])
    assert p.mode == "tp"


def test_nearest_and_outside_offs():
    counts, modes, mjd, exp = _scan(["ON", "OFF", "ON", "ON", "OFF", "ON"],
                                    [0, 100, 0, 0, 200, 0])
    p = prepare_references(scan=1, counts=counts, sobsmode=modes, mjd=mjd, exptime=exp,
                           method="nearest")
    np.testing.assert_allclose(p.c_ref[0, 0, 0], [100, 100, 200, 200])
    lin = prepare_references(scan=1, counts=counts, sobsmode=modes, mjd=mjd, exptime=exp)
    # ONs before the first / after the last OFF take the nearest OFF
    np.testing.assert_allclose(lin.c_ref[0, 0, 0], [100, 100 + 100 / 3, 100 + 200 / 3, 200])


def test_off_averages_computed_once_and_nan_aware():
    counts, modes, mjd, exp = _scan(["OFF", "ON", "OFF"], [100, 0, 300])
    counts[0, 0, 0, 0, 0] = np.nan  # a fill value in one dump of the first OFF
    counts[1, :, 0, 0, 0] = np.nan  # all dumps of channel 1 missing
    p = prepare_references(scan=1, counts=counts, sobsmode=modes, mjd=mjd, exptime=exp)
    assert p.off_mean.shape == (8, 2, 1, 2)
    assert p.off_mean[0, 0, 0, 0] == 100.0
    assert np.isnan(p.off_mean[1, 0, 0, 0])
    assert not np.shares_memory(p.c_ref, counts)


def test_otf_mode_detected_and_overridable():
    assert detect_mode(np.array(["OTF-OFF", "OTF-ON"]), "TP") == "otf"
    assert detect_mode(np.array(["OFF", "ON"]), None) == "tp"
    assert detect_mode(np.array(["OFF", "ON"]), None, override="otf") == "otf"


@pytest.mark.parametrize("modes", [["ON", "ON"], ["OFF", "OFF"]])
def test_no_on_or_no_off(modes):
    counts, m, mjd, exp = _scan(modes, [1, 1])
    with pytest.raises(NoReferenceError, match="scan 1.*sobsmode"):
        prepare_references(scan=1, counts=counts, sobsmode=m, mjd=mjd, exptime=exp)


def test_non_monotonic_mjd_rejected():
    counts, modes, mjd, exp = _scan(["OFF", "ON", "OFF"], [1, 1, 1])
    mjd[2] = mjd[0]
    with pytest.raises(MetadataError, match="scan 1.*source/mjd.*not strictly increasing"):
        prepare_references(scan=1, counts=counts, sobsmode=modes, mjd=mjd, exptime=exp)


def test_reference_indices_weights():
    lo, hi, w = reference_indices(np.array([0.5, 1.75, 3.0]), np.array([0.0, 1.0, 2.0]),
                                  "linear")
    np.testing.assert_array_equal(lo, [0, 1, 2])
    np.testing.assert_array_equal(hi, [1, 2, 2])
    np.testing.assert_allclose(w, [0.5, 0.75, 0.0])
