"""calpipe: calibration of heterodyne single-dish spectra (L0 counts -> L1 T_A*)."""
__version__ = "0.1.0"
