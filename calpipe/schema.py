"""Names shared by every layer: groups, files, stages, formats (names only, no behaviour).

The L0 reader, the L1 writer, the orchestration and the workflow all import their names from
here, so that I/O never has to import orchestration to agree on a file or stage name.
"""

from __future__ import annotations

import re

# -- L0 / L1 scan groups ----------------------------------------------------------------------

#: ASCII digits only and a full match: ``\d`` also matches non-ASCII digits, which int()
#: accepts, and ``$`` also matches before a trailing newline.
SCAN_GROUP = re.compile(r"scan_([0-9]{1,9})", re.ASCII)


def scan_group_name(scan: int) -> str:
    """``scan_NNNNNN``: the group of a scan in L0 and L1 (zero padded to six digits)."""
    if isinstance(scan, bool) or not hasattr(scan, "__index__") or int(scan) < 0:
        raise ValueError(f"scan number must be a non-negative integer, got {scan!r}")
    return f"scan_{int(scan):06d}"


def parse_scan_group(name: str) -> int | None:
    """The scan number of a group name, None for anything that is not ``scan_`` + digits."""
    match = SCAN_GROUP.fullmatch(name)
    return int(match.group(1)) if match else None


def scan_id(scan: int) -> str:
    """The workflow's wildcard value of a scan: its number zero padded to six digits."""
    return f"{int(scan):06d}"


# -- stages -----------------------------------------------------------------------------------

#: the per-scan stages in order; "load" is reading L0, "write" the L1 group
#: "skydiff" (issue 14, optional): the SKYDIFF history update, after resolve and prepare
STAGES = ("load", "resolve", "prepare", "skydiff", "atmosphere", "calibrate", "write")

# -- run outputs ------------------------------------------------------------------------------

FAILURES_FILE = "failures.json"
SUMMARY_FILE = "run_summary.json"
LOCK_FILE = ".calpipe.lock"
RUN_SUMMARY_FORMAT = "calpipe-run-summary"
RUN_SUMMARY_VERSION = 2

# -- L1 ---------------------------------------------------------------------------------------

L1_FORMAT_NAME = "calpipe-l1"
L1_FORMAT_VERSION = 2
#: prefix of the hidden names under which a scan group is built before its rename
PARTIAL_PREFIX = ".partial-"
