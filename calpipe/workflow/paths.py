"""Names and paths of a workflow run (relative to the Snakemake working directory)::

    results/
      failures.json, run_summary.json     the campaign: every session (rows carry "session")
      report.html                         the campaign report (rule report)
      <session>/
        manifest.json                     scans of the store, written at parse time
        stamps/<scan>.json                per-scan input stamp (file stats or digests)
        work/<scan>/*.npz|json            stage artifacts + stage records (temp unless kept)
        status/<scan>.json                per-scan status (calpipe.runner.ScanStatus)
        l1.zarr/scan_NNNNNN               the L1 group, written atomically by rule calibrate
        l1.zarr/failures.json             this session, exactly as the in-process mode writes
        l1.zarr/run_summary.json          them (same schema, calpipe.runner)
        quicklook/scan_NNNNNN.png         per-scan quick-looks (config quicklook: true)
        logs/, benchmarks/
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calpipe.errors import ConfigError
from calpipe.schema import FAILURES_FILE, SUMMARY_FILE, scan_id

RESULTS = "results"
SCAN_ID = r"\d{6,9}"  # wildcard constraint: zero-padded scan number, as in scan_NNNNNN
SESSION_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"

__all__ = ["RESULTS", "SCAN_ID", "SESSION_NAME", "scan_id"]


def session_dir(session: str, results: str = RESULTS) -> Path:
    return Path(results) / session


def manifest_path(session: str, results: str = RESULTS) -> Path:
    return session_dir(session, results) / "manifest.json"


def stamp_path(session: str, sid: str, results: str = RESULTS) -> Path:
    return session_dir(session, results) / "stamps" / f"{sid}.json"


def l1_path(session: str, results: str = RESULTS) -> Path:
    return session_dir(session, results) / "l1.zarr"


def session_failures_path(session: str, results: str = RESULTS) -> Path:
    return l1_path(session, results) / FAILURES_FILE


def session_summary_path(session: str, results: str = RESULTS) -> Path:
    return l1_path(session, results) / SUMMARY_FILE


def check_session_names(stores: Mapping[str, Any]) -> None:
    for name in stores:
        if not re.fullmatch(SESSION_NAME, str(name)):
            raise ConfigError(f"session name {name!r} must match {SESSION_NAME}")
