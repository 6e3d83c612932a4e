"""Atmosphere-table files.

Table file (``.npz``, written by :func:`save_table`, numpy ``savez_compressed``):

==================  ==========  ==============================================================
key                 dtype       content
==================  ==========  ==============================================================
``format``          str         ``"calpipe-atmosphere-table"``
``version``         int         1
``model``           str         model name, e.g. ``"am 14.0 (am-python 0.8.0)"``
``meta``            str         JSON build recipe (profile, ranges, command line, versions)
``digest``          str         :attr:`AtmosphereTable.digest` at write time (checked on load)
``frequency_hz``    float64     [F] ascending
``pwv_mm``          float64     [P] ascending
``pressure_hpa``    float64     [G] ascending
``tau``             float32/64  [G, P, F] zenith opacity (neper)
``t_atm``           float32/64  [G, P, F] effective emission temperature (K); absent: None
==================  ==========  ==============================================================

The digest is computed from the arrays as loaded (float64), so a table stored in float32
has the digest of its float32 values; ``save_table(load_table(x))`` keeps it.

Linear (CCAT-style) tables, :func:`load_linear_table`: a CSV (``#`` comments allowed) with a
header line and columns ``pressure_hpa, freq_ghz, b, c`` (b in neper/mm, c in neper), one row
per (pressure layer, frequency); every layer must list the same frequencies. A file without a
``pressure_hpa`` column is a single layer (give ``pressure_hpa=`` or it is read from a
``# pressure_hpa = 550`` comment line). An ``.npz`` with keys ``freq_ghz [F]``,
``pressure_hpa [G]``, ``b [G, F]``, ``c [G, F]`` is accepted as well.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import ConfigError

from .table import AtmosphereTable, from_linear_form

log = logging.getLogger(__name__)

FORMAT_NAME = "calpipe-atmosphere-table"
FORMAT_VERSION = 1
DEFAULT_TABLE_NAME = "atm_default.npz"


def save_table(table: AtmosphereTable, path: str | os.PathLike[str], *,
               dtype: str = "float32") -> None:
    """Write ``table`` to ``path`` (.npz) atomically (temporary file + rename).

    ``dtype`` of tau/t_atm on disk: ``float32`` (default; the table is re-read so the
    stored digest is the one :func:`load_table` will compute) or ``float64``.
    """
    path = Path(path)
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"save_table: dtype must be float32 or float64, not {dtype!r}")
    stored = AtmosphereTable(
        frequency_hz=table.frequency_hz,
        pwv_mm=table.pwv_mm,
        pressure_hpa=table.pressure_hpa,
        tau=table.tau.astype(dtype).astype(np.float64),
        t_atm=None if table.t_atm is None else table.t_atm.astype(dtype).astype(np.float64),
        model=table.model,
        meta=table.meta,
    )
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT_NAME),
        "version": np.array(FORMAT_VERSION),
        "model": np.array(table.model),
        "meta": np.array(json.dumps(dict(table.meta), sort_keys=True, default=str)),
        "digest": np.array(stored.digest),
        "frequency_hz": table.frequency_hz,
        "pwv_mm": table.pwv_mm,
        "pressure_hpa": table.pressure_hpa,
        "tau": table.tau.astype(dtype),
    }
    if table.t_atm is not None:
        arrays["t_atm"] = table.t_atm.astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    log.info("saved atmosphere table %s (%s, digest %s)", path, table.model, stored.digest[:12])


def load_table(path: str | os.PathLike[str]) -> AtmosphereTable:
    """Read a table written by :func:`save_table`; ConfigError (path + reason) if unusable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            need = {"format", "model", "frequency_hz", "pwv_mm", "pressure_hpa", "tau"}
            if not need <= keys:
                raise ConfigError(
                    f"atmosphere table {path}: missing keys {sorted(need - keys)}"
                )
            if str(z["format"]) != FORMAT_NAME:
                raise ConfigError(f"atmosphere table {path}: not a {FORMAT_NAME} file")
            version = int(z["version"]) if "version" in keys else 1
            if version > FORMAT_VERSION:
                raise ConfigError(
                    f"atmosphere table {path}: format version {version} is newer than "
                    f"supported ({FORMAT_VERSION})"
                )
            meta = json.loads(str(z["meta"])) if "meta" in keys else {}
            table = AtmosphereTable(
                frequency_hz=z["frequency_hz"],
                pwv_mm=z["pwv_mm"],
                pressure_hpa=z["pressure_hpa"],
                tau=z["tau"].astype(np.float64),
                t_atm=z["t_atm"].astype(np.float64) if "t_atm" in keys else None,
                model=str(z["model"]),
                meta=meta,
            )
            stored = str(z["digest"]) if "digest" in keys else None
    except ConfigError as exc:
        if str(path) in str(exc):
            raise
        raise ConfigError(f"atmosphere table {path}: {exc}") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError,
            EOFError) as exc:
        raise ConfigError(f"atmosphere table {path}: unreadable ({exc})") from exc
    if stored is not None and stored != table.digest:
        raise ConfigError(
            f"atmosphere table {path}: digest mismatch (stored {stored[:12]}, "
            f"computed {table.digest[:12]}); the file is corrupt or was edited"
        )
    return table


def _read_linear_csv(path: Path, pressure_hpa: float | None) -> dict[str, np.ndarray]:
    text = path.read_text()
    comment_p = re.search(r"^#\s*pressure_hpa\s*[=:]\s*([0-9.eE+-]+)", text, re.M)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"linear atmosphere table {path}: empty")
    header = [h.strip().lower() for h in re.split(r"[,\s]+", lines[0].strip()) if h.strip()]
    for name in ("freq_ghz", "b", "c"):
        if name not in header:
            raise ConfigError(
                f"linear atmosphere table {path}: header {header} lacks column '{name}' "
                "(need freq_ghz, b, c and optionally pressure_hpa)"
            )
    data = np.loadtxt(io.StringIO("\n".join(lines[1:])), delimiter=None if "," not in lines[0]
                      else ",", ndmin=2)
    if data.shape[1] != len(header):
        raise ConfigError(f"linear atmosphere table {path}: {data.shape[1]} columns, "
                          f"header has {len(header)}")
    col: dict[str, np.ndarray] = {h: data[:, i] for i, h in enumerate(header)}
    if "pressure_hpa" in col:
        p = col["pressure_hpa"]
    else:
        if pressure_hpa is None and comment_p:
            pressure_hpa = float(comment_p.group(1))
        if pressure_hpa is None:
            raise ConfigError(
                f"linear atmosphere table {path}: no pressure_hpa column, no '# pressure_hpa ='"
                " line and no pressure_hpa argument"
            )
        p = np.full(data.shape[0], float(pressure_hpa))
    pres = np.unique(p)
    freqs = None
    b_rows, c_rows = [], []
    for pv in pres:
        sel = p == pv
        order = np.argsort(col["freq_ghz"][sel])
        f = col["freq_ghz"][sel][order]
        if freqs is None:
            freqs = f
        elif f.shape != freqs.shape or not np.allclose(f, freqs, rtol=0, atol=1e-9):
            raise ConfigError(f"linear atmosphere table {path}: pressure layer {pv:g} hPa "
                              "has different frequencies from the first layer")
        b_rows.append(col["b"][sel][order])
        c_rows.append(col["c"][sel][order])
    assert freqs is not None
    return {"freq_ghz": freqs, "pressure_hpa": pres, "b": np.array(b_rows), "c": np.array(c_rows)}


def load_linear_table(path: str | os.PathLike[str], *, pressure_hpa: float | None = None,
                      model: str | None = None) -> AtmosphereTable:
    """Read a CCAT-style linear table (tau = b pwv + c; format in the module docstring)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                d = {k: np.asarray(z[k], dtype=float) for k in ("freq_ghz", "b", "c")}
                d["pressure_hpa"] = (np.atleast_1d(np.asarray(z["pressure_hpa"], dtype=float))
                                     if "pressure_hpa" in z.files else
                                     np.atleast_1d(np.asarray(pressure_hpa, dtype=float)))
                mname = str(z["model"]) if "model" in z.files else None
        else:
            d = _read_linear_csv(path, pressure_hpa)
            mname = None
        if d["pressure_hpa"].size == 0 or not np.all(np.isfinite(d["pressure_hpa"])):
            raise ConfigError(f"linear atmosphere table {path}: no valid pressure_hpa")
        for k in ("b", "c"):
            if not np.all(np.isfinite(d[k])):
                raise ConfigError(f"linear atmosphere table {path}: non-finite values in '{k}'")
        name = model or mname or f"ccat-linear ({path.name})"
        return from_linear_form(d["freq_ghz"] * 1e9, d["pressure_hpa"], d["b"], d["c"],
                                model=name, meta={"source_file": str(path)})
    except ConfigError as exc:
        if str(path) in str(exc):
            raise
        raise ConfigError(f"linear atmosphere table {path}: {exc}") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"linear atmosphere table {path}: unreadable ({exc})") from exc


def default_table_path() -> Path:
    """Path of the table shipped in ``calpipe/data/``."""
    return Path(str(resources.files("calpipe") / "data" / DEFAULT_TABLE_NAME))


@functools.lru_cache(maxsize=1)
def load_default_table() -> AtmosphereTable:
    """The shipped default table (loaded once per process)."""
    return load_table(default_table_path())
