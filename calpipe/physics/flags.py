"""L1 flag bits (u16), DESIGN 2.2. Bits 0-7 follow CCAT; 8+ are calpipe's own."""

from __future__ import annotations

BAD_CHANNEL = 1 << 0  # calibration: unusable channel (loads)
FILL_VALUE = 1 << 1  # missing input (int32 fill in ON or its reference)
SPIKE = 1 << 2
RFI = 1 << 3
TSYS_OUTLIER = 1 << 4
ELEVATION_LOW = 1 << 5
ML_FLAGGED = 1 << 6
MANUAL = 1 << 7
# calpipe's own (8+), docs/l1-format.md
LOW_TRANSMISSION = 1 << 8  # tr_s at the ON's airmass below min_transmission (blanked by default)

NAMES = {
    BAD_CHANNEL: "BAD_CHANNEL",
    FILL_VALUE: "FILL_VALUE",
    SPIKE: "SPIKE",
    RFI: "RFI",
    TSYS_OUTLIER: "TSYS_OUTLIER",
    ELEVATION_LOW: "ELEVATION_LOW",
    ML_FLAGGED: "ML_FLAGGED",
    MANUAL: "MANUAL",
    LOW_TRANSMISSION: "LOW_TRANSMISSION",
}

#: flags that make ``spectra`` NaN (LOW_TRANSMISSION too, unless blank_low_transmission is off)
BLANKING = BAD_CHANNEL | FILL_VALUE


def describe(value: int) -> list[str]:
    """Names of the bits set in ``value``."""
    return [name for bit, name in NAMES.items() if value & bit]
