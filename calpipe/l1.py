"""L1 store writer and reader (DESIGN 2.2).

One group per calibrated scan, ``scan_NNNNNN``, written atomically: the group is built under a
hidden temporary name in the same store and renamed into place in one ``os.rename`` (a reader
sees the complete group or none; a crash leaves only a ``.partial-*`` directory, which no
reader lists and the next run removes). Every array carries zarr v3 ``dimension_names`` so
``xarray.open_zarr(store, group="scan_NNNNNN")`` gives named dimensions.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import CalpipeError, StoreError
from calpipe.l0 import parse_scan_group, scan_group_name
from calpipe.stages import CalibrationResult

log = logging.getLogger(__name__)

FORMAT_NAME = "calpipe-l1"
FORMAT_VERSION = 1
PARTIAL_PREFIX = ".partial-"

#: dimension names of every L1 array (per-pixel atmosphere adds R, A to tau / tr)
DIMS: dict[str, tuple[str, ...]] = {
    "spectra": ("C", "D", "R", "A", "S_on"),
    "flags": ("C", "D", "R", "A", "S_on"),
    "t_sys": ("C", "R", "A", "S_on"),
    "weight": ("C", "R", "A", "S_on"),
    "t_rec": ("C", "R", "A"),
    "gamma": ("C", "R", "A"),
    "tau_signal": ("C",),
    "tau_image": ("C",),
    "tr_signal": ("C", "S_on"),
    "tr_image": ("C", "S_on"),
    "frequency_signal": ("C",),
    "frequency_image": ("C",),
    "mjd": ("D", "S_on"),
    "otf_lon": ("D", "S_on"),
    "otf_lat": ("D", "S_on"),
    "elevation": ("S_on",),
    "azimuth": ("S_on",),
    "exptime": ("S_on",),
    "pixel_offset_lon": ("R", "A", "S_on"),
    "pixel_offset_lat": ("R", "A", "S_on"),
    "atm_fit_observed_k": ("C", "S_off"),
    "atm_fit_model_k": ("C", "S_off"),
    "scale_uncertainty": ("C", "S_on"),  # optional (issue 13): absent in older stores
}
PER_PIXEL_DIMS = {
    "tau_signal": ("C", "R", "A"),
    "tau_image": ("C", "R", "A"),
    "tr_signal": ("C", "R", "A", "S_on"),
    "tr_image": ("C", "R", "A", "S_on"),
    "scale_uncertainty": ("C", "R", "A", "S_on"),
}
UNITS = {
    "spectra": "K", "t_sys": "K", "weight": "K-2", "t_rec": "K", "gamma": "counts/K",
    "tau_signal": "neper", "tau_image": "neper", "frequency_signal": "Hz",
    "frequency_image": "Hz", "mjd": "d", "otf_lon": "deg", "otf_lat": "deg",
    "elevation": "rad", "azimuth": "rad", "exptime": "s", "pixel_offset_lon": "deg",
    "pixel_offset_lat": "deg", "atm_fit_observed_k": "K", "atm_fit_model_k": "K",
    "scale_uncertainty": "1",
}
CHUNK_BYTES = 8 << 20


def l1_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Whole spectra per chunk, one ON subscan per chunk for the big arrays, <= CHUNK_BYTES.

    Measured in docs/performance.md: whole-channel chunks read a spectrum in one request
    and keep the chunk count per scan small.
    """
    if len(shape) < 4:
        return shape
    chunks = list(shape)
    chunks[-1] = 1  # S_on
    # shrink dumps (axis 1 of 5-D arrays), then pixels, until the chunk fits
    axes = [1, 2, 3] if len(shape) == 5 else [1, 2]
    for ax in axes:
        while int(np.prod(chunks)) * itemsize > CHUNK_BYTES and chunks[ax] > 1:
            chunks[ax] = (chunks[ax] + 1) // 2
    return tuple(chunks)


def _codecs() -> dict[str, Any]:
    from zarr.codecs import BloscCodec

    return {"compressors": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")}


def init_store(path: str | Path) -> Any:
    """Open (create) an L1 store and stamp the root attributes; remove stale partial groups."""
    import zarr

    from calpipe import __version__

    path = Path(path)
    try:
        if (path / "zarr.json").exists():
            root = zarr.open_group(str(path), mode="r+")
            if root.attrs.get("format") != FORMAT_NAME:
                raise StoreError(f"{path} exists and is not a calpipe L1 store "
                                 f"(format {root.attrs.get('format')!r})")
        else:
            if path.exists() and any(p for p in path.iterdir() if not p.name.startswith(".")
                                     and p.name not in ("failures.json", "run_summary.json")):
                raise StoreError(f"{path} exists, is not empty and is not a zarr store")
            root = zarr.open_group(str(path), mode="a", zarr_format=3)
            root.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                               "producer": f"calpipe {__version__}"})
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot open L1 store {path}: {exc}") from exc
    for stale in path.glob(PARTIAL_PREFIX + "*"):
        log.info("removing an interrupted partial group %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return root


def write_scan(path: str | Path, result: CalibrationResult, extra_attrs: Mapping[str, Any]
               ) -> Path:
    """Write one scan group atomically; replaces an existing group of the same scan."""
    import zarr

    result.check()
    path = Path(path)
    name = scan_group_name(result.scan)
    final = path / name
    tmp_name = f"{PARTIAL_PREFIX}{name}-{os.getpid()}"
    tmp = path / tmp_name
    if tmp.exists():
        shutil.rmtree(tmp)
    root = zarr.open_group(str(path), mode="r+")
    attrs = dict(result.attrs)
    attrs.update(extra_attrs)
    group = root.create_group(tmp_name, attributes=_jsonable(attrs))  # one metadata write
    dims = dict(DIMS)
    if result.tau_signal.ndim == 3:
        dims.update(PER_PIXEL_DIMS)
    codecs = _codecs()
    for field_name, dim_names in dims.items():
        values = getattr(result, field_name)
        if values is None:  # optional array
            continue
        arr = group.create_array(
            field_name, shape=values.shape, dtype=values.dtype,
            chunks=l1_chunks(values.shape, values.dtype.itemsize),
            dimension_names=dim_names,
            fill_value=np.nan if values.dtype.kind == "f" else 0,
            attributes={"units": UNITS[field_name]} if field_name in UNITS else {},
            **(codecs if values.ndim >= 4 else {}),
        )
        arr[...] = values
    _fsync_tree(tmp)
    if final.exists():
        trash = path / f"{PARTIAL_PREFIX}old-{name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    return final


def _fsync_tree(directory: Path) -> None:
    """fsync every file of a freshly written group so the rename publishes durable data."""
    for root, _dirs, files in os.walk(directory):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        v = float(value)
        return v if np.isfinite(v) else None
    return value


def list_scans(path: str | Path) -> list[int]:
    """Scan numbers with a complete group in an L1 store."""
    path = Path(path)
    out = []
    for p in path.iterdir() if path.exists() else []:
        number = parse_scan_group(p.name)
        if number is not None and (p / "zarr.json").exists():
            out.append(number)
    return sorted(out)


def open_scan(path: str | Path, scan: int) -> Any:
    """The scan group as an ``xarray.Dataset`` (lazy, named dimensions)."""
    import xarray as xr

    try:
        return xr.open_zarr(str(path), group=scan_group_name(scan), consolidated=False)
    except (FileNotFoundError, KeyError) as exc:
        raise CalpipeError(f"L1 store {path} has no complete group for scan {scan}") from exc


def read_scan(path: str | Path, scan: int) -> CalibrationResult:
    """Read a scan group back into a ``CalibrationResult`` (arrays in memory)."""
    import zarr

    group = zarr.open_group(str(Path(path) / scan_group_name(scan)), mode="r")
    values = {name: np.asarray(_array(group, name)[...]) for name in DIMS
              if name != "scale_uncertainty" or name in group}
    attrs = dict(group.attrs)
    return CalibrationResult(scan=int(str(attrs["scan_number"])), mode=str(attrs["mode"]),
                             attrs=attrs, **values)


def _array(group: Any, name: str) -> Any:
    """A member array of a group (typed helper: zarr's __getitem__ returns Array | Group)."""
    return group[name]
