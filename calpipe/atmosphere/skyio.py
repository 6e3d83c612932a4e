"""Sky tables on disk: save / load, the shipped per-tuning tables, a cache and on-demand builds.

Format ``calpipe-sky-table`` version 2 (.npz, float32 data, written atomically): keys
``format, version, model, meta (JSON), digest, frequency_hz, windows_hz, pwv_mm, pressure_hpa,
t_ground_k, airmass, tau, t_atm`` (docs/atmosphere.md section 9).

Lookup (:func:`find_sky_table`): the tables shipped in ``calpipe/data/sky/`` and the cache
directory (``sky_table_dir`` option, else ``$CALPIPE_CACHE/sky``, else
``~/.cache/calpipe/sky``); the first table whose windows hold every signal and image frequency
of the scan and whose pressure range holds its ground pressure is used. With
``build=True`` a missing table is built with am for the tuning (signal and image band +-
``margin``) and cached: CLI ``python -m calpipe.atmosphere.skyio build OUT --window LO,HI ...``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import ConfigError

from .skytable import SkyTable

log = logging.getLogger(__name__)

FORMAT_NAME = "calpipe-sky-table"
FORMAT_VERSION = 2
_KEYS = ("frequency_hz", "windows_hz", "pwv_mm", "pressure_hpa", "t_ground_k", "airmass")


def save_sky_table(table: SkyTable, path: str | os.PathLike[str]) -> SkyTable:
    """Write (float32 data) atomically; returns the table as stored (its digest is the file's)."""
    path = Path(path)
    stored = SkyTable(table.frequency_hz, table.windows_hz, table.pwv_mm, table.pressure_hpa,
                      table.t_ground_k, table.airmass,
                      table.tau.astype(np.float32).astype(np.float64),
                      table.t_atm.astype(np.float32).astype(np.float64), table.model, table.meta)
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT_NAME), "version": np.array(FORMAT_VERSION),
        "model": np.array(table.model),
        "meta": np.array(json.dumps(dict(table.meta), sort_keys=True, default=str)),
        "digest": np.array(stored.digest),
        "tau": table.tau.astype(np.float32), "t_atm": table.t_atm.astype(np.float32),
    }
    arrays.update({k: getattr(table, k) for k in _KEYS})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return stored


def is_sky_table(path: str | os.PathLike[str]) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return "format" in z.files and str(z["format"]) == FORMAT_NAME
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False


@functools.lru_cache(maxsize=16)
def load_sky_table(path: str | os.PathLike[str]) -> SkyTable:
    """Read a sky table (cached per path); ConfigError naming the path if unusable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT_NAME:
                raise ConfigError(f"sky table {path}: not a {FORMAT_NAME} file")
            if int(z["version"]) > FORMAT_VERSION:
                raise ConfigError(f"sky table {path}: format version {int(z['version'])} is "
                                  f"newer than supported ({FORMAT_VERSION})")
            table = SkyTable(
                frequency_hz=z["frequency_hz"], windows_hz=z["windows_hz"], pwv_mm=z["pwv_mm"],
                pressure_hpa=z["pressure_hpa"], t_ground_k=z["t_ground_k"],
                airmass=z["airmass"], tau=z["tau"].astype(np.float64),
                t_atm=z["t_atm"].astype(np.float64), model=str(z["model"]),
                meta=json.loads(str(z["meta"])))
            stored = str(z["digest"])
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError,
            EOFError) as exc:
        raise ConfigError(f"sky table {path}: unreadable ({exc})") from exc
    if stored != table.digest:
        raise ConfigError(f"sky table {path}: digest mismatch (corrupt or edited file)")
    return table


def shipped_sky_dir() -> Path:
    return Path(str(resources.files("calpipe") / "data" / "sky"))


def cache_dir(configured: str | None = None) -> Path:
    if configured:
        return Path(configured)
    root = os.environ.get("CALPIPE_CACHE")
    return Path(root) / "sky" if root else Path.home() / ".cache" / "calpipe" / "sky"


def find_sky_table(nu_sig: np.ndarray, nu_img: np.ndarray | None, pressure_hpa: float,
                   directory: str | None = None, *, shipped: bool = True
                   ) -> tuple[SkyTable, Path] | None:
    """The first shipped (if ``shipped``) or cached table covering every frequency and the
    pressure."""
    freqs = np.asarray(nu_sig, dtype=float)
    if nu_img is not None:
        freqs = np.concatenate([freqs, np.asarray(nu_img, dtype=float)])
    dirs = ([shipped_sky_dir()] if shipped else []) + [cache_dir(directory)]
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.npz")):
            try:
                table = load_sky_table(path)
            except ConfigError as exc:  # a corrupt cache entry must not hide the others
                log.warning("skipping %s", exc)
                continue
            if table.covers(freqs, pressure_hpa):
                return table, path
    return None


@functools.lru_cache(maxsize=1)
def default_table_digest() -> str:
    """Digest of the shipped zenith table (read from the file, not recomputed)."""
    from .tableio import default_table_path

    try:
        with np.load(default_table_path(), allow_pickle=False) as z:
            return str(z["digest"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return ""


def tuning_windows(nu_sig: np.ndarray, nu_img: np.ndarray | None, margin_ghz: float = 0.1
                   ) -> list[tuple[float, float]]:
    """Windows (GHz) covering the signal and image channels +- margin, merged if they touch."""
    spans = [(float(np.min(nu_sig)) / 1e9 - margin_ghz, float(np.max(nu_sig)) / 1e9 + margin_ghz)]
    if nu_img is not None:
        spans.append((float(np.min(nu_img)) / 1e9 - margin_ghz,
                       float(np.max(nu_img)) / 1e9 + margin_ghz))
    spans.sort()
    merged = [spans[0]]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def build_for_tuning(nu_sig: np.ndarray, nu_img: np.ndarray | None, pressure_hpa: float,
                     directory: str | None = None, workers: int = 2) -> tuple[SkyTable, Path]:
    """Build (am) and cache a table for one tuning: windows around both sidebands, one
    pressure node at the scan's pressure (+-4 % served with the zenith-table correction).
    Minutes per tuning (docs/atmosphere.md)."""
    from .am_builder import build_sky_table

    wins = tuning_windows(nu_sig, nu_img)
    pressures = [round(pressure_hpa, 1)]
    log.warning("building an am sky table for %s GHz at %s hPa (minutes; cached)",
                ", ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in wins), pressures)
    table = build_sky_table(wins, pressures, workers=workers, progress=True)
    name = "sky_" + "_".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in wins) + \
        f"_{pressures[0]:g}hPa.npz"
    path = cache_dir(directory) / name
    stored = save_sky_table(table, path)
    load_sky_table.cache_clear()
    return stored, path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calpipe.atmosphere.skyio build OUT --window LO,HI [--window ...]``."""
    from .am_builder import (
        SKY_AIRMASS_NODES,
        SKY_PWV_NODES_MM,
        SKY_STEP_MHZ,
        SKY_TGROUND_NODES_K,
        build_sky_table,
    )

    ap = argparse.ArgumentParser(prog="python -m calpipe.atmosphere.skyio")
    ap.add_argument("command", choices=["build"])
    ap.add_argument("output", type=Path)
    ap.add_argument("--window", action="append", required=True,
                    help="frequency window LO,HI in GHz (repeat for signal and image)")
    ap.add_argument("--pressures", default="550", help="ground pressures hPa [550]")
    ap.add_argument("--step", type=float, default=SKY_STEP_MHZ, help="MHz [2]")
    ap.add_argument("--pwv", default=",".join(f"{x:.6g}" for x in SKY_PWV_NODES_MM))
    ap.add_argument("--airmass", default=",".join(f"{x:g}" for x in SKY_AIRMASS_NODES))
    ap.add_argument("--t-ground", default=",".join(f"{x:g}" for x in SKY_TGROUND_NODES_K))
    ap.add_argument("--workers", type=int, default=2)
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("_am").setLevel(logging.ERROR)

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x.strip()]

    wins = [tuple(floats(w)) for w in ns.window]
    if any(len(w) != 2 for w in wins):
        raise SystemExit("--window takes LO,HI")
    table = build_sky_table([(w[0], w[1]) for w in wins], floats(ns.pressures),
                            step_mhz=ns.step, pwv_nodes_mm=floats(ns.pwv),
                            airmass_nodes=floats(ns.airmass),
                            t_ground_nodes_k=floats(ns.t_ground), workers=ns.workers,
                            progress=True)
    stored = save_sky_table(table, ns.output)
    log.info("wrote %s (%d channels, digest %s, %.0f s)", ns.output, stored.frequency_hz.size,
             stored.digest[:12], table.meta["build_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
