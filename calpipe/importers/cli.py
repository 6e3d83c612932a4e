"""``calpipe import sdfits DIR_OR_FILES... OUT.zarr``: the importers' command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _cmd_import_sdfits(ns: argparse.Namespace) -> int:
    from calpipe.importers.sdfits import import_sdfits

    result = import_sdfits(ns.inputs, ns.output, overwrite=ns.overwrite)
    if not ns.quiet:
        print(f"wrote {result.out}: calibration scan(s) {list(result.calibration_scans)}, "
              f"Nod scan(s) {list(result.nod_scans)}, {len(result.receivers)} receiver(s), "
              f"{len(result.arrays)} array(s), {result.n_channels} channels"
              + (f"; skipped {list(result.skipped_scans)}" if result.skipped_scans else ""),
              file=sys.stderr)
    return 0


def add_cli(sub: Any) -> None:
    """Register ``import`` (with the ``sdfits`` format) on the calpipe subparsers."""
    p = sub.add_parser("import", help="convert foreign raw data into an L0 session",
                       description="Convert raw data of another telescope into a calpipe L0 "
                                   "session store (docs/usage.md).")
    fmt = p.add_subparsers(dest="format", required=True)
    q = fmt.add_parser("sdfits", help="GBT raw SDFITS (VEGAS): VANE/SKY and Nod scans")
    q.add_argument("inputs", nargs="+", type=Path,
                   help="SDFITS files or directories (their *.fits)")
    q.add_argument("output", type=Path, help="L0 store to write (OUT.zarr)")
    q.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists [refuse]")
    q.set_defaults(func=_cmd_import_sdfits)
