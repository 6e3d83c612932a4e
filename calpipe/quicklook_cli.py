"""``calpipe quicklook L1.zarr [--axis velocity]``: quick-looks of an existing L1 store
(the subcommand, added by calpipe.cli; issue 15)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_quicklook(ns: argparse.Namespace) -> int:
    from calpipe.cli import _parse_scans
    from calpipe.quicklook import default_quicklook_dir, quicklook_store

    out = ns.output or default_quicklook_dir(ns.store)
    paths = quicklook_store(ns.store, out, scans=_parse_scans(ns.scans), axis=ns.axis)
    if not ns.quiet:
        print(f"wrote {len(paths)} quick-look(s) to {out}")
    return 0


def add_cli(sub: Any) -> None:
    """Register the ``quicklook`` subcommand on the ``calpipe`` subparsers."""
    from calpipe.quicklook import AXES

    p = sub.add_parser("quicklook", help="write the quick-look PNG of every scan of an L1 store",
                       description="One PNG per scan (docs/qa.md), from the L1 store alone.")
    p.add_argument("store", type=Path, help="L1 store (OUT.zarr)")
    p.add_argument("-o", "--output", type=Path,
                   help="directory for scan_NNNNNN.png [OUT_quicklook next to OUT.zarr]")
    p.add_argument("--scans", help="scan selection, e.g. 1001,1003-1005 [all]")
    p.add_argument("--axis", choices=AXES, default="frequency",
                   help="spectral axis: signal sky frequency or radio velocity (topocentric, "
                        "from the scan's rest frequency) [%(default)s]")
    p.set_defaults(func=_cmd_quicklook)
