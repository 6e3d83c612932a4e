"""L1 store writer and reader (DESIGN 2.2; the versioned schema is docs/l1-format.md).

One group per calibrated scan, ``scan_NNNNNN``, written atomically: the group is built under a
hidden temporary name in the same store and renamed into place in one ``os.rename`` (a reader
sees the complete group or none; a crash leaves only a ``.partial-*`` directory, which no
reader lists and the next run removes).

Format version 2 (issue 15) is self-describing: ``xarray.open_zarr(store, group=...)`` gives
named dimensions (``frequency``, ``time``, ``pixel``, ``array``, ``subscan``, ``off_subscan``),
index coordinates (sky frequency, UTC time, ON subscan number), auxiliary coordinates
(velocity, image frequency, positions, pixel ids) and CF attributes. The dumps of all ON
subscans form one ``time`` axis, subscan-major: time index ``t = s * D + d``. Every array
carries a crc32c checksum codec, so a corrupted chunk fails to decode instead of returning
wrong numbers. All names live in this module (``DIM_*``, ``SCHEMA``); readers import them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import CalpipeError, StoreError
from calpipe.physics import flags as fl
from calpipe.products import SKYDIFF_FIELDS, CalibrationResult
from calpipe.schema import (
    FAILURES_FILE,
    L1_FORMAT_NAME,
    L1_FORMAT_VERSION,
    LOCK_FILE,
    PARTIAL_PREFIX,
    SUMMARY_FILE,
    parse_scan_group,
    scan_group_name,
)

log = logging.getLogger(__name__)

FORMAT_NAME = L1_FORMAT_NAME
#: version 2 (issue 15): named dimensions and coordinates, one time axis, degrees, crc32c
FORMAT_VERSION = L1_FORMAT_VERSION
#: versions this reader understands
READABLE_VERSIONS = (2,)

# -- the schema (one place: every reader imports these names) --------------------------------

DIM_FREQUENCY = "frequency"  # C: channels, indexed by the signal-sideband sky frequency (Hz)
DIM_TIME = "time"  # D x S_on: every dump of every ON subscan, subscan-major
DIM_PIXEL = "pixel"  # R: receiver (pixel) within an array
DIM_ARRAY = "array"  # A: sub-array / band
DIM_SUBSCAN = "subscan"  # S_on: ON subscans, indexed by their L0 subscan number
DIM_OFF = "off_subscan"  # S_off: OFF subscans (pwv-fit diagnostic), by L0 subscan number
#: K: SKYDIFF pairs (issue 14; not "skydiff", the name of the variable: xarray makes a
#: variable named like one of its dimensions a coordinate, not a data variable)
DIM_SKYDIFF = "skydiff_pair"

#: modified Julian date epoch as a CF time unit (xarray decodes it to datetime64, UTC)
MJD_UNITS = "days since 1858-11-17 00:00:00"
C_KM_S = 299792.458


@dataclass(frozen=True)
class Var:
    """One L1 array: on-disk name, dimensions, CF attributes; ``coord`` = an xarray coordinate.

    ``field`` is the ``CalibrationResult`` attribute it stores (None: derived by the writer,
    not read back by ``read_scan``).
    """

    name: str
    dims: tuple[str, ...]
    long_name: str
    units: str | None = None
    coord: bool = False
    field: str | None = None


F, T, R, A, S, OF = DIM_FREQUENCY, DIM_TIME, DIM_PIXEL, DIM_ARRAY, DIM_SUBSCAN, DIM_OFF
K = DIM_SKYDIFF
_SCHEMA = [
    Var("spectra", (F, T, R, A), "antenna temperature T_A* (signal sideband)", "K",
        field="spectra"),
    Var("flags", (F, T, R, A), "quality flags (bit mask)", None, field="flags"),
    Var("t_sys", (F, R, A, S), "system temperature on the T_A* scale", "K", field="t_sys"),
    Var("weight", (F, R, A, S), "inverse variance of one dump (radiometer equation)", "K-2",
        field="weight"),
    Var("t_rec", (F, R, A), "SSB receiver temperature", "K", field="t_rec"),
    Var("gamma", (F, R, A), "gain (counts per K)", "counts/K", field="gamma"),
    Var("tau_signal", (F,), "zenith opacity, signal sideband", "neper", field="tau_signal"),
    Var("tau_image", (F,), "zenith opacity, image sideband", "neper", field="tau_image"),
    Var("tr_signal", (F, S), "atmospheric transmission at the ON elevation, signal sideband",
        "1", field="tr_signal"),
    Var("tr_image", (F, S), "atmospheric transmission at the ON elevation, image sideband",
        "1", field="tr_image"),
    Var("atm_fit_observed_k", (F, OF), "pwv fit: observed sky minus hot, mean over pixels", "K",
        field="atm_fit_observed_k"),
    Var("atm_fit_model_k", (F, OF), "pwv fit: model sky minus hot at the fitted pwv", "K",
        field="atm_fit_model_k"),
    # optional (issue 13): absent for a fixed / fallback pwv
    Var("scale_uncertainty", (F, S), "fractional 1-sigma T_A* scale error from the pwv error",
        "1", field="scale_uncertainty"),
    # optional (issue 14): SKYDIFF, absent unless the scan produced differences
    Var("skydiff", (F, R, A, K), "SKYDIFF: S_obs = (C_OFF - C_hot) / gamma of the current OFF "
        "minus that of the reference OFF", "K", field="skydiff"),
    # coordinates
    Var(F, (F,), "sky frequency, signal sideband (topocentric)", "Hz", True,
        "frequency_signal"),
    Var("frequency_image", (F,), "sky frequency, image sideband (topocentric)", "Hz", True,
        "frequency_image"),
    Var("velocity", (F,), "radio velocity from the rest frequency, topocentric (no LSR "
        "correction)", "km s-1", True),
    Var(T, (T,), "time of the dump start (UTC)", MJD_UNITS, True, "mjd"),
    Var("time_subscan", (T,), "L0 subscan number of the ON subscan of this dump", None, True),
    Var("dump", (T,), "dump number within its ON subscan", None, True),
    Var("otf_lon", (T,), "map offset in longitude (boresight)", "deg", True, "otf_lon"),
    Var("otf_lat", (T,), "map offset in latitude (boresight)", "deg", True, "otf_lat"),
    Var("lon_offset", (T, R, A), "sky offset in longitude of the pixel (otf_lon + "
        "pixel_offset_lon)", "deg", True),
    Var("lat_offset", (T, R, A), "sky offset in latitude of the pixel (otf_lat + "
        "pixel_offset_lat)", "deg", True),
    Var(S, (S,), "L0 subscan number of the ON subscan", None, True),
    Var("elevation", (S,), "elevation at the ON subscan start", "deg", True, "elevation"),
    Var("azimuth", (S,), "azimuth at the ON subscan start", "deg", True, "azimuth"),
    Var("exptime", (S,), "integration time per dump", "s", True, "exptime"),
    Var("frontend_backend", (S,), "L0 frontend_backends id of the ON subscan", None, True),
    # issue 14, otf-chopped scans only (attribute dbs): the nod beam of each ON subscan
    Var("beam", (S,), "dual-beam-switch beam of the ON subscan (A, B; AB: merged pair)", None,
        True),
    Var("subscan_b", (S,), "L0 subscan number of the beam-B ON merged into this subscan "
        "(dbs_merge)", None, True),
    Var("pixel_offset_lon", (R, A, S), "pixel offset in longitude", "deg", True,
        "pixel_offset_lon"),
    Var("pixel_offset_lat", (R, A, S), "pixel offset in latitude", "deg", True,
        "pixel_offset_lat"),
    Var("pixel_id", (R, A), "pixel name", None, True),
    Var(OF, (OF,), "L0 subscan number of the OFF subscan", None, True),
    Var("skydiff_current_scan", (K,), "SKYDIFF: scan of the current OFF", None, True,
        "skydiff_current_scan"),
    Var("skydiff_current_off", (K,), "SKYDIFF: L0 subscan number of the current OFF", None,
        True, "skydiff_current_off"),
    Var("skydiff_current_mjd", (K,), "SKYDIFF: mid-time of the current OFF (UTC)", MJD_UNITS,
        True, "skydiff_current_mjd"),
    Var("skydiff_ref_scan", (K,), "SKYDIFF: scan of the reference OFF", None, True,
        "skydiff_ref_scan"),
    Var("skydiff_ref_off", (K,), "SKYDIFF: L0 subscan number of the reference OFF", None,
        True, "skydiff_ref_off"),
    Var("skydiff_ref_mjd", (K,), "SKYDIFF: mid-time of the reference OFF (UTC)", MJD_UNITS,
        True, "skydiff_ref_mjd"),
]
SCHEMA: dict[str, Var] = {v.name: v for v in _SCHEMA}
#: CalibrationResult field -> on-disk variable
FIELDS: dict[str, Var] = {v.field: v for v in _SCHEMA if v.field is not None}
#: on-disk dims of every CalibrationResult field (the atmosphere arrays: atmosphere_dims)
DIMS: dict[str, tuple[str, ...]] = {f: v.dims for f, v in FIELDS.items()}
_TAU = ("tau_signal", "tau_image")
_PER_ON = ("tr_signal", "tr_image", "scale_uncertainty")


def atmosphere_dims(field: str, per_pixel: bool, per_pair: bool) -> tuple[str, ...]:
    """On-disk dims of a field: the atmosphere arrays gain (pixel, array) with a per-pixel
    pwv fit, and tau gains (subscan) with a per-pair fit (issue 14)."""
    dims = DIMS[field]
    if field in _TAU:
        return (F,) + ((R, A) if per_pixel else ()) + ((S,) if per_pair else ())
    if field in _PER_ON and per_pixel:
        return (F, R, A, S)
    return dims
#: CalibrationResult fields that may be None (then not written, and read back as None)
OPTIONAL_FIELDS = ("scale_uncertainty", *SKYDIFF_FIELDS)
#: arrays with a time axis: written one ON subscan (D dumps) at a time
TIME_FIELDS = ("spectra", "flags")
FLAG_MASKS = list(fl.NAMES)
FLAG_MEANINGS = " ".join(fl.NAMES.values())
CHUNK_BYTES = 8 << 20


#: bytes of one write call of a time array: a few chunks, so that zarr still encodes chunks
#: concurrently while the contiguous copy of the strided [C, D, R, A, S] block stays small
WRITE_BYTES = 32 << 20


def _time_block(chunks: tuple[int, ...], itemsize: int, n_dumps: int) -> int:
    """Dumps per write: m time chunks (m divides the chunks per ON subscan) of at most
    WRITE_BYTES, at least one chunk."""
    per_chunk = int(np.prod(chunks)) * itemsize
    n_chunks = n_dumps // chunks[1]
    most = max(1, min(n_chunks, WRITE_BYTES // max(per_chunk, 1)))
    return chunks[1] * max(m for m in range(1, most + 1) if n_chunks % m == 0)


def l1_chunks(shape: tuple[int, ...], itemsize: int, n_dumps: int | None = None
              ) -> tuple[int, ...]:
    """Chunk shape: whole spectra, one ON subscan per chunk, at most CHUNK_BYTES.

    ``[C, T, R, A]`` arrays (``n_dumps`` = D given): the time chunk is a divisor of D so that
    no chunk straddles two ON subscans (each subscan is written in one call); it shrinks to
    smaller divisors, then the pixel axes halve, until the chunk fits. ``[C, R, A, S]``
    arrays: one subscan per chunk, pixels halved until it fits. Smaller arrays: one chunk.
    Measured in docs/performance.md: whole-channel chunks read a spectrum in one request and
    keep the chunk count per scan small.
    """
    if len(shape) < 4:
        return shape
    chunks = list(shape)

    def size() -> int:
        return int(np.prod(chunks)) * itemsize

    if n_dumps is not None:  # [C, T, R, A]
        divisors = [k for k in range(n_dumps, 0, -1) if n_dumps % k == 0]
        chunks[1] = divisors.pop(0)
        while size() > CHUNK_BYTES and divisors:
            chunks[1] = divisors.pop(0)
        axes = [2, 3]
    else:  # [C, R, A, S]
        chunks[-1] = 1
        axes = [1, 2]
    for ax in axes:
        while size() > CHUNK_BYTES and chunks[ax] > 1:
            chunks[ax] = (chunks[ax] + 1) // 2
    return tuple(chunks)


def _codecs(big: bool) -> dict[str, Any]:
    """Blosc lz4 + shuffle for the big arrays, zstd for the rest; crc32c last on every array
    (a flipped bit in a chunk then fails the read with a checksum error)."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    first = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle") if big
             else ZstdCodec(level=0))
    return {"compressors": (first, Crc32cCodec())}


def init_store(path: str | Path) -> Any:
    """Create (atomically) or open an L1 store of this format version and remove stale
    partial groups; the caller holds the exclusive output lock. Returns the root group.

    Groups of two format versions never mix in one store (``check_format``)."""
    import zarr

    ensure_store(path)
    remove_stale_partials(path)
    try:
        return zarr.open_group(str(path), mode="r+")
    except Exception as exc:
        raise StoreError(f"cannot open L1 store {path}: {exc}") from exc


def _writer_id() -> str:
    """Process and thread: temporary names never collide between concurrent writers (Snakemake
    runs jobs as threads of one process with --force-use-threads)."""
    import threading

    return f"{os.getpid()}-{threading.get_ident()}"


def write_scan(path: str | Path, result: CalibrationResult, extra_attrs: Mapping[str, Any]
               ) -> Path:
    """Write one scan group atomically; replaces an existing group of the same scan."""
    result.check()
    path = Path(path)
    name = scan_group_name(result.scan)
    final = path / name
    tmp_name = f"{PARTIAL_PREFIX}{name}-{_writer_id()}"
    tmp = path / tmp_name
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_group(path, tmp_name, result, extra_attrs)
    except BaseException:  # disk full, read-only, interrupted: no partial group stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        trash = path / f"{PARTIAL_PREFIX}old-{name}-{_writer_id()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    return final


def _write_group(path: Path, tmp_name: str, result: CalibrationResult,
                 extra_attrs: Mapping[str, Any]) -> None:
    """Build the scan group under its hidden name and fsync it (write_scan renames it)."""
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    attrs = dict(result.attrs)
    attrs.update(extra_attrs)
    attrs = _describe(attrs, result)
    group = root.create_group(tmp_name, attributes=_jsonable(attrs))  # one metadata write
    variables = scan_variables(result)
    coords = [v.name for v, _d, _x in variables if v.coord and v.name not in v.dims]
    n_d = result.spectra.shape[1]
    for var, dims, values in variables:
        meta: dict[str, Any] = {"long_name": var.long_name}
        if var.units is not None:
            meta["units"] = var.units
        meta.update(_extra_attrs(var.name, attrs))
        if not var.coord:
            aux = [c for c in coords if set(SCHEMA[c].dims) <= set(dims)]
            if aux:
                meta["coordinates"] = " ".join(aux)
        is_time = var.field in TIME_FIELDS
        kind = values.dtype.kind
        arr = group.create_array(
            var.name, shape=values.shape, dtype=values.dtype if kind != "U" else str,
            chunks=l1_chunks(values.shape, values.dtype.itemsize, n_d if is_time else None),
            dimension_names=dims,
            fill_value=np.nan if kind == "f" else ("" if kind == "U" else 0),
            attributes=meta, **_codecs(values.ndim >= 4),
        )
        if is_time:  # [C, D, R, A, S] -> time = s * D + d, a few chunks' dumps per write
            step = _time_block(arr.chunks, values.dtype.itemsize, n_d)
            for s in range(result.spectra.shape[4]):
                for d in range(0, n_d, step):
                    arr[:, s * n_d + d:s * n_d + d + step] = values.source[:, d:d + step, ..., s]
        else:
            arr[...] = values
    _fsync_tree(path / tmp_name)


class _TimeLayout:
    """A [C, D, R, A, S] array presented as [C, S*D, R, A] without a copy (written per S)."""

    ndim = 4

    def __init__(self, source: np.ndarray):
        c, d, r, a, s = source.shape
        self.source = source
        self.shape = (c, s * d, r, a)
        self.dtype = source.dtype


def scan_variables(result: CalibrationResult) -> list[tuple[Var, tuple[str, ...], Any]]:
    """Every variable of a scan group as (schema entry, dims, values in the on-disk layout).

    The big time arrays come as ``_TimeLayout`` views; everything else as numpy arrays.
    """
    c, n_d, n_r, n_a, n_s = result.spectra.shape
    attrs = result.attrs
    on = _index_list(attrs.get("reference", {}).get("on_index"), n_s)
    n_off = result.atm_fit_observed_k.shape[1]
    off = _index_list(attrs.get("reference", {}).get("off_index"), n_off)
    per_pixel, per_pair = result.atmosphere_layout()

    def by_time(x: np.ndarray) -> np.ndarray:  # [D, S] -> [S*D]
        return np.ascontiguousarray(x.T).reshape(-1)

    sub_of_t = np.repeat(np.arange(n_s), n_d)
    out: list[tuple[Var, tuple[str, ...], Any]] = []
    for field_name, var in FIELDS.items():
        dims = atmosphere_dims(field_name, per_pixel, per_pair)
        values = getattr(result, field_name)
        if values is None and field_name in OPTIONAL_FIELDS:
            continue
        if field_name in TIME_FIELDS:
            values = _TimeLayout(values)
        elif field_name in ("mjd", "otf_lon", "otf_lat"):
            values = by_time(values)
        elif field_name in ("elevation", "azimuth"):
            values = np.degrees(values.astype(np.float64))
        out.append((var, dims, values))
    derived: dict[str, np.ndarray] = {
        "time_subscan": np.asarray(on, dtype=np.int32)[sub_of_t],
        "dump": np.tile(np.arange(n_d, dtype=np.int32), n_s),
        DIM_SUBSCAN: np.asarray(on, dtype=np.int32),
        DIM_OFF: np.asarray(off, dtype=np.int32),
        "pixel_id": pixel_ids(attrs.get("frontend_backends"), n_r, n_a),
    }
    for axis, pix in (("lon", result.pixel_offset_lon), ("lat", result.pixel_offset_lat)):
        otf = by_time(getattr(result, f"otf_{axis}"))  # [T]
        derived[f"{axis}_offset"] = otf[:, None, None] + np.moveaxis(pix[..., sub_of_t], 2, 0)
    rest = _rest_frequency(attrs)
    if rest is not None:
        derived["velocity"] = C_KM_S * (1.0 - result.frequency_signal / rest)
    fb = attrs.get("frontend_backends")
    if isinstance(fb, list) and len(fb) == n_s:
        derived["frontend_backend"] = np.array([str(x) for x in fb])
    dbs = attrs.get("dbs")
    if isinstance(dbs, Mapping):  # issue 14: otf-chopped scans
        beam = dbs.get("beam")
        if isinstance(beam, list) and len(beam) == n_s:
            derived["beam"] = np.array([str(x) for x in beam])
        sub_b = dbs.get("subscan_b")
        if isinstance(sub_b, list) and len(sub_b) == n_s:
            derived["subscan_b"] = np.asarray(sub_b, dtype=np.int32)
    out += [(SCHEMA[k], SCHEMA[k].dims, v) for k, v in derived.items()]
    return out


def _index_list(value: Any, n: int) -> list[int]:
    if isinstance(value, list) and len(value) == n:
        return [int(v) for v in value]
    return list(range(n))


def _rest_frequency(attrs: Mapping[str, Any]) -> float | None:
    try:
        rest = float(attrs.get("rest_freq_hz"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return rest if np.isfinite(rest) and rest > 0 else None


def pixel_ids(frontend_backends: Any, n_r: int, n_a: int) -> np.ndarray:
    """Pixel names [R, A].

    From ``frontend_backends`` (one string per ON subscan) when every ON subscan lists the
    same R x A distinct names (separated by commas, semicolons or blanks; filled in [R, A]
    C order), or when there is one pixel and every ON subscan gives the same single name.
    Otherwise generated: ``A<a>_PX<rr>`` (array a, pixel r).
    """
    generated = np.array([[f"A{a}_PX{r:02d}" for a in range(n_a)] for r in range(n_r)])
    if not isinstance(frontend_backends, list) or not frontend_backends:
        return generated
    lists = {tuple(t for t in re.split(r"[,;\s]+", str(x).strip()) if t)
             for x in frontend_backends}
    if len(lists) != 1:
        return generated
    names = next(iter(lists))
    if len(names) == n_r * n_a and len(set(names)) == len(names):
        return np.array(names).reshape(n_r, n_a)
    return generated


def _extra_attrs(name: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Per-variable attributes beyond long_name / units (a long_name here replaces it)."""
    scale = attrs.get("scale")
    if isinstance(scale, Mapping) and scale.get("scale") == "tmb":  # issue 14: T_mb scale
        if name == "spectra":
            return {"long_name": "main-beam brightness temperature T_mb (signal sideband)"}
        if name == "t_sys":
            return {"long_name": "system temperature on the T_mb scale"}
    if name == "flags":
        return {"flag_masks": FLAG_MASKS, "flag_meanings": FLAG_MEANINGS}
    sky = attrs.get("skydiff")
    if name == "skydiff" and isinstance(sky, Mapping):  # issue 14: N and the formula
        return {"skydiff_depth": sky.get("depth"), "formula": sky.get("formula")}
    if name == DIM_TIME:
        return {"calendar": "proleptic_gregorian", "standard_name": "time",
                "time_scale": "UTC", "comment": "MJD of the L0 subscan start + d * exptime"}
    if name == "velocity":
        return {"doppler_convention": "radio", "reference_frame": "topocentric",
                "rest_frequency_hz": _rest_frequency(attrs),
                "comment": "c (1 - frequency / rest_frequency); the L0 sky frequencies are "
                           "not corrected for the Earth's motion, so this is not V_LSR"}
    if name == DIM_FREQUENCY:
        return {"sideband": "signal", "reference_frame": "topocentric"}
    return {}


def _describe(attrs: dict[str, Any], result: CalibrationResult) -> dict[str, Any]:
    """Scan attributes of format 2: ISO-8601 ``date_obs`` (UTC); the L0 text kept aside."""
    out = dict(attrs)
    l0_text = str(attrs.get("date_obs", "") or "")
    start = _iso_from_text(l0_text)
    if start is None:
        mjd = result.mjd[np.isfinite(result.mjd)]
        start = mjd_to_iso(float(mjd.min())) if mjd.size else ""
    out["date_obs"] = start
    if l0_text and l0_text != start:
        out["date_obs_l0"] = l0_text
    return out


MJD_EPOCH = dt.datetime(1858, 11, 17, tzinfo=dt.UTC)


def mjd_to_iso(mjd: float) -> str:
    """MJD (UTC) -> ``YYYY-MM-DDThh:mm:ss.ffffff`` (UTC, no zone suffix, as FITS DATE-OBS)."""
    t = MJD_EPOCH + dt.timedelta(days=float(mjd))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _iso_from_text(text: str) -> str | None:
    """An L0 ``date_obs``: ISO-8601 (normalised to UTC) or ``MJD <number>``; else None."""
    text = text.strip()
    m = re.fullmatch(r"MJD\s*([0-9.+-eE]+)", text)
    if m:
        try:
            return mjd_to_iso(float(m.group(1)))
        except ValueError:
            return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")


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


# -- reading -----------------------------------------------------------------------------------

def check_format(path: str | Path) -> dict[str, Any]:
    """Root attributes of an L1 store; StoreError unless it is calpipe-l1 of a known version."""
    import json

    path = Path(path)
    meta = path / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {}) or {}
    except FileNotFoundError:
        raise StoreError(f"{path} is not an L1 store (no zarr.json)") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the root metadata of L1 store {path}: {exc}") from exc
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is not a calpipe L1 store (format {attrs.get('format')!r})")
    version = attrs.get("format_version")
    if version not in READABLE_VERSIONS:
        from calpipe import __version__

        hint = ("written by an older calpipe: recalibrate the session (or read it with the "
                "calpipe release that wrote it)" if isinstance(version, int)
                and version < FORMAT_VERSION else "written by a newer calpipe: upgrade calpipe")
        raise StoreError(f"L1 store {path} has format_version {version!r}; calpipe "
                         f"{__version__} reads version(s) {list(READABLE_VERSIONS)} ({hint})")
    return dict(attrs)


def list_scans(path: str | Path) -> list[int]:
    """Scan numbers with a complete group in an L1 store."""
    path = Path(path)
    out = []
    for p in path.iterdir() if path.exists() else []:
        number = parse_scan_group(p.name)
        if number is not None and (p / "zarr.json").exists():
            out.append(number)
    return sorted(out)


def open_group(path: str | Path, scan: int) -> Any:
    """The zarr group of one scan (format checked); CalpipeError if it is not there."""
    import zarr

    check_format(path)
    group_path = Path(path) / scan_group_name(scan)
    if not (group_path / "zarr.json").exists():
        raise CalpipeError(f"L1 store {path} has no complete group for scan {scan}")
    return zarr.open_group(str(group_path), mode="r")


def open_scan(path: str | Path, scan: int) -> Any:
    """The scan group as an ``xarray.Dataset`` (lazy; named dimensions and coordinates)."""
    import xarray as xr

    check_format(path)
    try:
        return xr.open_zarr(str(path), group=scan_group_name(scan), consolidated=False)
    except (FileNotFoundError, KeyError) as exc:
        raise CalpipeError(f"L1 store {path} has no complete group for scan {scan}") from exc


def n_dumps(group: Any) -> int:
    """D: dumps per ON subscan of a scan group (time length / ON subscans)."""
    n_t = int(group[DIM_TIME].shape[0])
    n_s = int(group[DIM_SUBSCAN].shape[0])
    return n_t // max(n_s, 1)


def read_subscan(group: Any, name: str, s: int) -> np.ndarray:
    """[C, D, R, A] block of a time array (``spectra`` / ``flags``) for ON subscan ``s``."""
    d = n_dumps(group)
    return read_array(group, name, (slice(None), slice(s * d, (s + 1) * d)))


def read_array(group: Any, name: str, selection: Any = Ellipsis) -> np.ndarray:
    """Read (part of) one array; a chunk that fails to decode (checksum) is a StoreError."""
    try:
        return np.asarray(_array(group, name)[selection])
    except KeyError:
        raise
    except Exception as exc:  # crc32c mismatch, truncated chunk, codec error
        raise StoreError(f"L1 group {group.path or group.store}: array {name!r} is "
                         f"unreadable ({type(exc).__name__}: {exc})") from exc


def read_scan(path: str | Path, scan: int) -> CalibrationResult:
    """Read a scan group back into a ``CalibrationResult`` (arrays in memory, the in-memory
    layout: [C, D, R, A, S_on], radians), bit-identical to what was written."""
    group = open_group(path, scan)
    n_s = int(group[DIM_SUBSCAN].shape[0])
    values: dict[str, np.ndarray] = {}
    present = set(group.array_keys())
    for field_name, var in FIELDS.items():
        if field_name in OPTIONAL_FIELDS and var.name not in present:
            continue
        x = read_array(group, var.name)
        if field_name in TIME_FIELDS:  # [C, S*D, R, A] -> [C, D, R, A, S]
            c, n_t, r, a = x.shape
            x = np.moveaxis(x.reshape(c, n_s, n_t // n_s, r, a), 1, 4)
        elif field_name in ("mjd", "otf_lon", "otf_lat"):
            x = x.reshape(n_s, -1).T
        elif field_name in ("elevation", "azimuth"):
            x = np.radians(x).astype(np.float32)
        values[field_name] = x
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
        tmp = path.parent / f".{path.name}.init-{_writer_id()}"
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
    check_format(path)


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
    trash = path / f"{PARTIAL_PREFIX}old-{scan_group_name(scan)}-{_writer_id()}"
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
