"""calpipe: calibration of heterodyne single-dish spectra (L0 raw counts -> L1 T_A*).

Library entry points (DESIGN 4.1):
- ``calibrate_store(store, out, config)``: all scans, prefetch mode, -> PipelineResult
- ``calibrate_single_scan(store, scan, out, config)``: one scan, all stages
- ``calibrate_full(...)``: the calibration equation on in-memory arrays

``import calpipe`` is light: the names below are imported on first use, so that a Snakemake
job or ``import calpipe.errors`` loads only the modules its work needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "CalibrationConfig": "calpipe.config",
    "CalibrationError": "calpipe.errors",
    "CalpipeError": "calpipe.errors",
    "ConfigError": "calpipe.errors",
    "StoreError": "calpipe.errors",
    "calibrate_full": "calpipe.physics.calibrate",
    "PipelineResult": "calpipe.pipeline",
    "calibrate_single_scan": "calpipe.pipeline",
    "calibrate_store": "calpipe.pipeline",
}

if TYPE_CHECKING:
    from calpipe.config import CalibrationConfig
    from calpipe.errors import CalibrationError, CalpipeError, ConfigError, StoreError
    from calpipe.physics.calibrate import calibrate_full
    from calpipe.pipeline import PipelineResult, calibrate_single_scan, calibrate_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'calpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
