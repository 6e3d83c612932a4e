"""The calpipe error hierarchy.

``CalpipeError`` is the root. ``CalibrationError`` (and its subclasses) is a per-scan,
data-caused problem: the pipeline records it for that scan and goes on with the others.
``ConfigError`` and ``StoreError`` are fatal for a run. Anything else is a bug or an
infrastructure fault and is never swallowed.
"""

from __future__ import annotations


class CalpipeError(Exception):
    """Root of every error calpipe raises on purpose."""


class ConfigError(CalpipeError):
    """Invalid or incomplete configuration (fatal)."""


class StoreError(CalpipeError):
    """A store that cannot be opened or listed at all (fatal for the run)."""


class CalibrationError(CalpipeError):
    """A per-scan data problem: the scan is recorded as failed and the run goes on.

    ``scan`` is the scan number when known; ``array`` the L0/L1 array concerned.
    The message always names both, so a line in failures.json is actionable on its own.
    """

    def __init__(self, message: str, *, scan: int | None = None, array: str | None = None):
        self.scan = scan
        self.array = array
        parts = []
        if scan is not None:
            parts.append(f"scan {scan}")
        if array is not None:
            parts.append(f"array '{array}'")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.detail = message


class L0FormatError(CalibrationError):
    """An L0 array is missing, of the wrong shape or dtype, or unreadable."""


class MetadataError(CalibrationError):
    """L0 metadata is present but not usable (non-finite, out of range, unknown value)."""


class MissingLoadError(CalibrationError):
    """No HOT or no COLD subscan reachable for the scan (own group or ``lloadsn``)."""


class BadLoadError(CalibrationError):
    """Loads exist but give no usable channel (HOT <= COLD, bad temperatures, ...)."""


class NoReferenceError(CalibrationError):
    """No ON or no OFF subscan to build references from."""


class AtmosphereError(CalibrationError):
    """The atmosphere stage failed: pwv fit not converged, on a grid edge, or table range."""


class NoValidDataError(CalibrationError):
    """The calibration ran but produced no usable sample (all NaN / all flagged, or values
    that overflow): never reported as calibrated (issue 12)."""


class ArtifactError(CalibrationError):
    """A stage artifact (workflow checkpoint file) is missing, truncated or unreadable.

    Raised by ``calpipe.artifacts.load_artifact``; the workflow's jobs turn it into a job
    failure (``calpipe.workflow.jobs._load``: a hard error, so ``--retries`` and
    ``--keep-going`` apply) rather than a per-scan failure in failures.json. It does not check
    that an artifact belongs to the same scan or configuration (Snakemake's rerun triggers
    decide which artifacts are rebuilt)."""


class ImportFormatError(CalpipeError):
    """An input file of an importer (``calpipe import``) is missing a column, malformed or
    unsupported (fatal for the import; nothing is written)."""
class LowTransmissionError(CalibrationError):
    """No channel of the scan has a signal transmission above ``min_transmission``."""
