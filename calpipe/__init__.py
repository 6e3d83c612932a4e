"""calpipe: calibration of heterodyne single-dish spectra (L0 raw counts -> L1 T_A*).

Library entry points (DESIGN 4.1):
- ``calibrate_store(store, out, config)``: all scans, prefetch mode, -> PipelineResult
- ``calibrate_single_scan(store, scan, out, config)``: one scan, all stages
- ``calibrate_full(...)``: the calibration equation on in-memory arrays
"""

__version__ = "0.1.0"

from calpipe.config import CalibrationConfig  # noqa: E402
from calpipe.errors import (  # noqa: E402
    CalibrationError,
    CalpipeError,
    ConfigError,
    StoreError,
)
from calpipe.physics.calibrate import calibrate_full  # noqa: E402
from calpipe.pipeline import (  # noqa: E402
    PipelineResult,
    calibrate_single_scan,
    calibrate_store,
)

__all__ = [
    "CalibrationConfig",
    "CalibrationError",
    "CalpipeError",
    "ConfigError",
    "PipelineResult",
    "StoreError",
    "__version__",
    "calibrate_full",
    "calibrate_single_scan",
    "calibrate_store",
]
