"""``calpipe export L1.zarr OUT --format sdfits``: the subcommand (added by calpipe.cli)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calpipe.export import FORMATS


def _site(text: str) -> tuple[float, float, float]:
    try:
        lon, lat, height = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--site wants LON_DEG,LAT_DEG,HEIGHT_M (east longitude), got {text!r}") from None
    return lon, lat, height


def _cmd_export(ns: argparse.Namespace) -> int:
    from calpipe.cli import _parse_scans
    from calpipe.export.sdfits import export_sdfits

    done = export_sdfits(ns.store, ns.output, scans=_parse_scans(ns.scans),
                         overwrite=ns.overwrite, site=ns.site)
    if not ns.quiet:
        print(f"wrote {done.path}: {len(done.scans)} scan(s), {done.n_rows} rows "
              f"({ns.format})")
    return 0


def add_cli(sub: Any) -> None:
    """Register the ``export`` subcommand on the ``calpipe`` subparsers."""
    p = sub.add_parser(
        "export", help="export an L1 store to another format (SDFITS for dysh)",
        description="Write the calibrated spectra of an L1 store as single-dish FITS: one row "
                    "per dump, pixel and ON subscan (docs/export.md).")
    p.add_argument("store", type=Path, help="L1 store (OUT.zarr)")
    p.add_argument("output", type=Path, help="file to write, e.g. OUT.fits")
    p.add_argument("--format", choices=FORMATS, default="sdfits",
                   help="output format [%(default)s]")
    p.add_argument("--scans", help="scan selection, e.g. 1001,1003-1005 [all]")
    p.add_argument("--site", type=_site, metavar="LON,LAT,HEIGHT",
                   help="telescope site (east longitude deg, latitude deg, height m): adds "
                        "SITELONG/SITELAT/SITEELEV, LST and ICRS positions [scan attributes "
                        "site_lon_deg, site_lat_deg, site_height_m, else none]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=_cmd_export)
