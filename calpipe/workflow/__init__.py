"""Library side of the Snakemake workflow (DESIGN 4.2), by responsibility:

- ``paths``: names and paths of a run's files;
- ``manifest``: the scan manifest, input stamps and per-stage config digests (parse time);
- ``jobs``: one function per stage rule, each running a ``calpipe.runner.ScanRun``;
- ``aggregate``: failures.json and run_summary.json, per session and for the campaign;
- ``snakemake_adapter``: ``script_main``, called by every ``workflow/scripts/*.py``.

The Snakefile's ``common.smk`` uses the names re-exported here.
"""

from __future__ import annotations

from calpipe.workflow.manifest import (
    MANIFEST_FORMAT,
    calibration_config,
    load_manifests,
    stage_digest,
)
from calpipe.workflow.paths import RESULTS, SCAN_ID, SESSION_NAME, scan_id


def summary_message(summary_path: str) -> str | None:
    """The closing line of a run, from its run summary (None when there is none)."""
    from calpipe.runner import read_run_summary

    summary = read_run_summary(summary_path)
    return None if summary is None else str(summary.get("message"))


__all__ = [
    "MANIFEST_FORMAT",
    "RESULTS",
    "SCAN_ID",
    "SESSION_NAME",
    "calibration_config",
    "load_manifests",
    "scan_id",
    "stage_digest",
    "summary_message",
]
