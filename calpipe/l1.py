"""L1 store writer and reader (DESIGN 2.2).

One group per calibrated scan, ``scan_NNNNNN``, written atomically: the group is built under a
hidden temporary name in the same store and renamed into place in one ``os.rename`` (a reader
sees the complete group or none; a crash leaves only a ``.partial-*`` directory, which no
reader lists and the next run removes). Every array carries zarr v3 ``dimension_names`` so
``xarray.open_zarr(store, group="scan_NNNNNN")`` gives named dimensions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import CalpipeError, StoreError
from calpipe.products import CalibrationResult
from calpipe.schema import (
    FAILURES_FILE,
    LOCK_FILE,
    PARTIAL_PREFIX,
    SUMMARY_FILE,
    parse_scan_group,
    scan_group_name,
)
from calpipe.schema import (
    L1_FORMAT_NAME as FORMAT_NAME,
)
from calpipe.schema import (
    L1_FORMAT_VERSION as FORMAT_VERSION,
)

log = logging.getLogger(__name__)


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
    """Create (atomically) or open an L1 store and remove stale partial groups; the caller
    holds the exclusive output lock. Returns the root group."""
    import zarr

    ensure_store(path)
    remove_stale_partials(path)
    try:
        return zarr.open_group(str(path), mode="r+")
    except Exception as exc:
        raise StoreError(f"cannot open L1 store {path}: {exc}") from exc


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


# -- the store as a run's output --------------------------------------------------------------

@contextlib.contextmanager
def output_lock(out: str | Path, *, shared: bool = False) -> Iterator[None]:
    """Refuse a second run writing the same output (flock on OUT/.calpipe.lock).

    An in-process run holds the lock exclusively for its whole run. Snakemake jobs, which
    write different scan groups of one store concurrently, hold it shared while they write:
    they coexist with each other, and an in-process run and a workflow never interleave.
    """
    import fcntl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "a workflow job"
            raise StoreError(f"another calpipe run ({holder}) is writing {out}; "
                             "refusing to interleave") from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)  # no stale pid for the next refusal message
    finally:
        os.close(fd)


def ensure_store(path: str | Path) -> None:
    """Create the L1 store root atomically if missing; safe with concurrent jobs.

    The root is built in a temporary directory next to it and renamed into place (a run
    killed meanwhile leaves no half-made root; a job that loses a race discards its copy).
    An existing root must be a calpipe L1 store. Partial groups are not touched here: other
    jobs may be writing them (see :func:`remove_stale_partials`).
    """
    import zarr

    from calpipe import __version__

    path = Path(path)
    if not (path / "zarr.json").exists():
        if path.exists() and any(p for p in path.iterdir() if not p.name.startswith(".")
                                 and p.name not in (FAILURES_FILE, SUMMARY_FILE)):
            raise StoreError(f"{path} exists, is not empty and is not a zarr store")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.init-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            root.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                               "producer": f"calpipe {__version__}"})
            if path.exists():  # a directory holding only the lock / hidden files
                os.replace(tmp / "zarr.json", path / "zarr.json")
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.rename(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (path / "zarr.json").exists():
                raise
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot open L1 store {path}: {exc}") from exc
    fmt = (meta.get("attributes") or {}).get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT_NAME:
        raise StoreError(f"{path} exists and is not a calpipe L1 store (format {fmt!r})")


def remove_stale_partials(path: str | Path, scan: int | None = None) -> None:
    """Remove interrupted partial groups (all, or this scan's) and stray temporary files.

    Only safe while no other writer works on those groups: under the exclusive output lock
    (in-process), or for its own scan (a Snakemake job).
    """
    path = Path(path)
    pattern = "*" if scan is None else f"*{scan_group_name(scan)}-*"
    for stale in path.glob(PARTIAL_PREFIX + pattern):
        log.info("removing an interrupted partial group %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    if scan is None:
        for stale in list(path.glob(".*.tmp")) + list(path.parent.glob(f".{path.name}.init-*")):
            with contextlib.suppress(OSError):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def remove_scan_group(path: str | Path, scan: int) -> bool:
    """Remove the group of a scan that failed in this run (the store describes the latest
    run); True when there was one."""
    path = Path(path)
    final = path / scan_group_name(scan)
    if not final.exists():
        return False
    trash = path / f"{PARTIAL_PREFIX}old-{scan_group_name(scan)}-{os.getpid()}"
    os.rename(final, trash)
    shutil.rmtree(trash, ignore_errors=True)
    log.info("removed the L1 group of scan %d (it failed in this run)", scan)
    return True


def stored_config_digests(path: str | Path) -> dict[int, str]:
    """{scan: configuration digest} of the complete groups of an L1 store (metadata only)."""
    out: dict[int, str] = {}
    for scan in list_scans(path):
        try:
            meta = json.loads((Path(path) / scan_group_name(scan) / "zarr.json").read_text())
            digest = meta["attributes"]["provenance"]["config_digest"]
        except (OSError, ValueError, KeyError, TypeError):
            digest = ""
        out[scan] = str(digest)
    return out


def check_existing(path: str | Path, config_digest: str, existing: str) -> list[int]:
    """Decide what happens to scan groups an earlier run left in ``path``.

    ``existing``: ``refuse`` (default) raises a StoreError when a group was calibrated with
    other options; ``overwrite`` removes every group first; ``add`` keeps them. Returns the
    scans whose groups were removed.
    """
    digests = stored_config_digests(path)
    if existing == "overwrite":
        for scan in digests:
            remove_scan_group(path, scan)
        return sorted(digests)
    other = sorted(s for s, d in digests.items() if d != config_digest)
    if other and existing != "add":
        shown = ", ".join(map(str, other[:8])) + (" ..." if len(other) > 8 else "")
        raise StoreError(
            f"{path} holds {len(other)} scan group(s) calibrated with other options "
            f"(scans {shown}; config digest {digests[other[0]] or 'unknown'}, this run "
            f"{config_digest}): choose another output, or pass --overwrite to replace them, "
            "or --add to keep them next to this run's scans")
    return []
