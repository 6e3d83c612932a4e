"""Calibration physics (DESIGN section 3): pure numpy on in-memory arrays, no I/O."""
