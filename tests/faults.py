"""Fault injectors (issue 6): break a valid simulated L0 session in ONE specific way.

Every scan-level injector has the signature ``inject(store, scan) -> None``: it changes exactly
one thing in scan ``scan`` of the local Zarr store ``store`` (a copy: never a shared pristine
session) and nothing else, so that every other scan must still calibrate bit for bit as in a
clean run. Store-level injectors take the store only. They build on the breakers of
:mod:`calpipe.testing` (``replace_array``, ``truncate_chunk``, ``corrupt_metadata`` ...).

The registry :data:`SCAN_FAULTS` maps a fault name to a :class:`ScanFault`: its injector, the
class of malformed input it stands for (issue 6 / DESIGN 6) and the outcome calpipe promises
for it (:class:`Expected`: error class, stage, the array the message names, a phrase of the
problem) — or ``None`` when the scan must still calibrate (benign oddities: a huge attribute,
hostile attribute values). :data:`STORE_FAULTS` lists the store-level ones: fatal (``StoreError``,
exit 1) or ignored with a warning (group names that are not ``scan_`` + digits).
``docs/reliability.md`` is the human-readable table; ``tests/test_reliability.py`` runs every
entry through the in-process pipeline and the Snakemake workflow.

Injectors that break loads (``needs_own_calibration``) work on the scan's *own*
``calibration/`` group and refuse a scan without one: breaking a shared load scan would break
every scan that points at it through ``lloadsn``, not one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calpipe.l0 import FILL_VALUE, scan_group_name
from calpipe.testing import (
    add_group,
    array_dir,
    corrupt_metadata,
    delete_array,
    delete_chunk,
    read_array,
    replace_array,
    truncate_chunk,
)

Injector = Callable[[Path, int], None]

#: size of the string attribute written by :func:`huge_attribute` (bytes)
HUGE_ATTRIBUTE_BYTES = 50_000_000

#: group names that are not ``scan_`` + ASCII digits, created on disk by :func:`odd_group_names`
#: ("\u0661\u0660\u0660\u0661" are Arabic-Indic digits: Python's ``\d`` and ``int()`` accept
#: them; a trailing newline is accepted by a ``$`` anchor). A name with "/" cannot be one
#: directory: ``scan_a/scan_000009`` is the group ``scan_a`` holding a nested scan group.
ODD_GROUP_NAMES = ("scan_12a", "scan_..", "..scan_1", "scan_1001x", "scan_-5", "scan_",
                   "scan_\u0661\u0660\u0660\u0661", "scan_001001\n", "scan_ 1002", "scan_a")
NESTED_GROUP = "scan_a/scan_000009"

#: values planted by :func:`hostile_attributes` (path traversal and pickle-looking strings)
HOSTILE_ATTRIBUTES: dict[str, Any] = {
    "source": "../../../../../tmp/calpipe-escape",
    "line": "/etc/passwd",
    "obs_id": "cos\nsystem\n(S'touch /tmp/calpipe-pwned'\ntR.",  # a protocol-0 pickle program
    "scan_number": "../../scan_999999",
    "telescope": "__import__('os').system('touch /tmp/calpipe-pwned')",
    "plan_id": {"__reduce__": ["os.system", ["touch /tmp/calpipe-pwned"]]},
}


@dataclass(frozen=True)
class Expected:
    """The failure record calpipe must write for a broken scan (DESIGN 2.3)."""

    error: str  # CalibrationError subclass name
    stage: str  # load | resolve | prepare | atmosphere | calibrate | write
    array: str  # the message names this array (substring)
    problem: str  # ... and contains this phrase (substring, case-insensitive)


@dataclass(frozen=True)
class ScanFault:
    """One class of malformed input, applied to one scan."""

    name: str
    title: str  # the class, as issue 6 / DESIGN 6 names it
    inject: Injector
    expected: Expected | None  # None: the scan must calibrate as in a clean run
    needs_own_calibration: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.doc:  # the first paragraph of the injector's docstring
            first = (self.inject.__doc__ or "").strip().split("\n\n")[0]
            object.__setattr__(self, "doc", " ".join(line.strip() for line in first.split("\n")))


# -- helpers ----------------------------------------------------------------------------------

def _group_dir(store: Path, scan: int) -> Path:
    return Path(store) / scan_group_name(scan)


def has_own_calibration(store: str | Path, scan: int) -> bool:
    """Whether scan ``scan`` carries its own ``calibration/`` group."""
    return (_group_dir(Path(store), scan) / "calibration").is_dir()


def _own_calibration(store: Path, scan: int) -> None:
    if not has_own_calibration(store, scan):
        raise ValueError(f"scan {scan} has no calibration/ group of its own: breaking a shared "
                         "load scan would break every scan that uses it")


def _modes(store: Path, scan: int, path: str) -> list[str]:
    return [str(v).strip().upper() for v in read_array(store, scan, path).tolist()]


def _set_modes(store: Path, scan: int, path: str, modes: list[str]) -> None:
    replace_array(store, scan, path, np.array(modes, dtype=object))


def _overwrite(store: Path, scan: int, path: str, values: np.ndarray) -> None:
    """Write ``values`` into the existing array in place (same shape, chunks and codecs)."""
    import zarr

    arr = zarr.open_array(str(array_dir(store, scan, path)), mode="r+")
    arr[...] = values


def _set_metadata(store: Path, scan: int, path: str, index: int, value: float) -> None:
    values = read_array(store, scan, path).copy()
    values[index] = value
    _overwrite(store, scan, path, values)


# -- loads (the scan's own calibration/ group) ------------------------------------------------

def missing_hot(store: Path, scan: int) -> None:
    """No HOT subscan: every HOT subscan of the scan's calibration/ group relabelled COLD."""
    _own_calibration(store, scan)
    modes = _modes(store, scan, "calibration/sobsmode")
    _set_modes(store, scan, "calibration/sobsmode", ["COLD" if m == "HOT" else m for m in modes])


def missing_cold(store: Path, scan: int) -> None:
    """No COLD subscan: every COLD/COL subscan of calibration/ relabelled HOT."""
    _own_calibration(store, scan)
    modes = _modes(store, scan, "calibration/sobsmode")
    _set_modes(store, scan, "calibration/sobsmode",
               ["HOT" if m in ("COLD", "COL") else m for m in modes])


def hot_not_above_cold(store: Path, scan: int) -> None:
    """HOT <= COLD on every channel: the HOT and COLD subscans' counts are swapped."""
    _own_calibration(store, scan)
    modes = _modes(store, scan, "calibration/sobsmode")
    hot, cold = modes.index("HOT"), next(i for i, m in enumerate(modes) if m in ("COLD", "COL"))
    counts = read_array(store, scan, "calibration/data_5d").copy()
    counts[..., [hot, cold]] = counts[..., [cold, hot]]
    _overwrite(store, scan, "calibration/data_5d", counts)


def _load_temperature(name: str, value: float) -> Injector:
    def inject(store: Path, scan: int) -> None:
        _own_calibration(store, scan)
        values = read_array(store, scan, f"calibration/{name}")
        _overwrite(store, scan, f"calibration/{name}", np.full_like(values, value))

    inject.__doc__ = f"Load temperature calibration/{name} = {value} K on every subscan."
    inject.__name__ = f"{name}_{value}"
    return inject


thot_nan = _load_temperature("thot", float("nan"))
tcold_zero = _load_temperature("tcold", 0.0)
thot_negative = _load_temperature("thot", -293.0)


def lloadsn_missing_scan(store: Path, scan: int) -> None:
    """``lloadsn`` points to scan 999 (not in the store); an own calibration/ is removed."""
    if has_own_calibration(store, scan):
        delete_array(store, scan, "calibration")  # else the own loads win over lloadsn
    values = read_array(store, scan, "source/lloadsn")
    _overwrite(store, scan, "source/lloadsn", np.full_like(values, 999))


def lloadsn_without_calibration(store: Path, scan: int) -> None:
    """``lloadsn`` points to a science scan without calibration/ (the scan itself, whose own
    calibration/ group, if any, is removed)."""
    if has_own_calibration(store, scan):
        delete_array(store, scan, "calibration")
    values = read_array(store, scan, "source/lloadsn")
    _overwrite(store, scan, "source/lloadsn", np.full_like(values, scan))


# -- source subscans ---------------------------------------------------------------------------

def missing_off(store: Path, scan: int) -> None:
    """No OFF subscan: OFF / OTF-OFF relabelled ON / OTF-ON in source/sobsmode."""
    modes = _modes(store, scan, "source/sobsmode")
    _set_modes(store, scan, "source/sobsmode", [m.replace("OFF", "ON") for m in modes])


def missing_on(store: Path, scan: int) -> None:
    """No ON subscan: ON / OTF-ON relabelled OFF / OTF-OFF in source/sobsmode."""
    modes = _modes(store, scan, "source/sobsmode")
    _set_modes(store, scan, "source/sobsmode", [m.replace("ON", "OFF") for m in modes])


def unknown_sobsmode(store: Path, scan: int) -> None:
    """One source subscan has sobsmode 'SKYDIP' (not ON, OFF, OTF-ON, OTF-OFF)."""
    modes = _modes(store, scan, "source/sobsmode")
    modes[1] = "SKYDIP"
    _set_modes(store, scan, "source/sobsmode", modes)


def all_fill(store: Path, scan: int) -> None:
    """Every sample of source/data_5d is the int32 fill value (no data at all)."""
    counts = read_array(store, scan, "source/data_5d")
    _overwrite(store, scan, "source/data_5d", np.full_like(counts, FILL_VALUE))


def sky_hotter_than_hot_load(store: Path, scan: int) -> None:
    """The OFF counts are scaled to 1.5 x the HOT counts: the pwv fit cannot converge.

    Uses the loads the scan really takes (its own calibration/ or that of ``lloadsn``), which
    are not modified. Fill values stay fill values.
    """
    from calpipe.l0 import open_session

    session = open_session(store)
    cal_scan = session.calibration_scan_for(scan)
    cal_modes = _modes(store, cal_scan, "calibration/sobsmode")
    hot = read_array(store, cal_scan, "calibration/data_5d")[..., cal_modes.index("HOT")]
    counts = read_array(store, scan, "source/data_5d").copy()
    modes = _modes(store, scan, "source/sobsmode")
    for s, mode in enumerate(modes):
        if mode.endswith("OFF"):
            off = counts[..., s]
            scaled = np.clip(1.5 * hot.astype(np.float64), 1, np.iinfo(np.int32).max - 1)
            counts[..., s] = np.where(off == FILL_VALUE, FILL_VALUE, scaled.astype(np.int32))
    _overwrite(store, scan, "source/data_5d", counts)


def duplicated_subscan(store: Path, scan: int) -> None:
    """Subscan 1 is stored twice (data_5d and every per-subscan array repeat it)."""
    import zarr

    src = zarr.open_group(str(_group_dir(store, scan) / "source"), mode="r")
    n_s = read_array(store, scan, "source/sobsmode").shape[0]
    order = [0, 1, 1, *range(2, n_s)]
    for name in list(src.array_keys()):
        values = read_array(store, scan, f"source/{name}")
        if values.ndim == 0 or values.shape[-1] != n_s:
            continue
        values = values[..., order]
        if values.dtype.kind in "OUT":
            values = values.astype(object)  # replace_array stores object arrays as strings
        replace_array(store, scan, f"source/{name}", values)


def mjd_not_monotonic(store: Path, scan: int) -> None:
    """source/mjd of subscans 1 and 3 swapped (subscan start times out of order)."""
    mjd = read_array(store, scan, "source/mjd").copy()
    mjd[[1, 3]] = mjd[[3, 1]]
    _overwrite(store, scan, "source/mjd", mjd)


# -- metadata ----------------------------------------------------------------------------------

def metadata_nan(store: Path, scan: int) -> None:
    """source/tamb of subscan 1 is NaN."""
    _set_metadata(store, scan, "source/tamb", 1, float("nan"))


def metadata_inf(store: Path, scan: int) -> None:
    """source/mjd of subscan 2 is +inf."""
    _set_metadata(store, scan, "source/mjd", 2, float("inf"))


def _elevation(deg: float) -> Injector:
    def inject(store: Path, scan: int) -> None:
        values = read_array(store, scan, "source/elevation")
        _overwrite(store, scan, "source/elevation", np.full_like(values, np.radians(deg)))

    inject.__doc__ = f"source/elevation = {deg} deg (stored in radians) on every subscan."
    inject.__name__ = f"elevation_{deg}"
    return inject


elevation_zero = _elevation(0.0)
elevation_negative = _elevation(-5.0)
elevation_above_90 = _elevation(95.0)


def missing_metadata(store: Path, scan: int) -> None:
    """The array source/mjd is deleted."""
    delete_array(store, scan, "source/mjd")


def metadata_wrong_dtype(store: Path, scan: int) -> None:
    """source/elevation stored as strings."""
    values = read_array(store, scan, "source/elevation")
    replace_array(store, scan, "source/elevation", np.array([str(v) for v in values.tolist()],
                                                            dtype=object))


# -- the counts array --------------------------------------------------------------------------

def data_shape_mismatch(store: Path, scan: int) -> None:
    """source/data_5d loses its last subscan: S disagrees with the [S] metadata arrays."""
    counts = read_array(store, scan, "source/data_5d")
    replace_array(store, scan, "source/data_5d", counts[..., :-1])


def data_wrong_dtype(store: Path, scan: int) -> None:
    """source/data_5d stored as float32 instead of int32 (same values)."""
    counts = read_array(store, scan, "source/data_5d")
    replace_array(store, scan, "source/data_5d", counts.astype(np.float32))


def truncated_chunk(store: Path, scan: int) -> None:
    """The first chunk file of source/data_5d is cut to half its size."""
    truncate_chunk(store, scan, "source/data_5d", 0, 0.5)


def deleted_chunk(store: Path, scan: int) -> None:
    """The third chunk file of source/data_5d is deleted."""
    delete_chunk(store, scan, "source/data_5d", 2)


def truncated_metadata_chunk(store: Path, scan: int) -> None:
    """The (only) chunk file of source/mjd is cut to half its size."""
    truncate_chunk(store, scan, "source/mjd", 0, 0.5)


def corrupt_group_json(store: Path, scan: int) -> None:
    """The scan group's zarr.json is not JSON."""
    corrupt_metadata(store, scan, "")


def corrupt_array_json(store: Path, scan: int) -> None:
    """source/data_5d/zarr.json is not JSON."""
    corrupt_metadata(store, scan, "source/data_5d")


def pickle_codec(store: Path, scan: int) -> None:
    """source/sobsmode becomes an object array whose codec is pickle and whose chunk is a
    pickle program that would run ``os.mkdir(<store>.PWNED)``: reading it must not unpickle.

    Zarr v3 (``numcodecs.pickle`` codec) or v2 (``.zarray`` with a ``pickle`` filter), as the
    store is. See :func:`pickle_marker` for the path the payload would create.
    """
    adir = array_dir(store, scan, "source/sobsmode")
    n = read_array(store, scan, "source/sobsmode").shape[0]
    payload = _pickle_program(pickle_marker(store))
    shutil.rmtree(adir)
    adir.mkdir()
    if (Path(store) / "zarr.json").exists():
        meta = {"zarr_format": 3, "node_type": "array", "shape": [n], "data_type": "string",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [n]}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": "", "codecs": [{"name": "numcodecs.pickle",
                                              "configuration": {"protocol": 0}}],
                "attributes": {}}
        (adir / "zarr.json").write_text(json.dumps(meta))
        (adir / "c").mkdir()
        (adir / "c" / "0").write_bytes(payload)
    else:
        meta = {"zarr_format": 2, "shape": [n], "chunks": [n], "dtype": "|O",
                "compressor": None, "fill_value": None, "order": "C",
                "filters": [{"id": "pickle", "protocol": 0}]}
        (adir / ".zarray").write_text(json.dumps(meta))
        (adir / "0").write_bytes(payload)


def pickle_marker(store: str | Path) -> Path:
    """The directory the payload of :func:`pickle_codec` would create if it were unpickled."""
    return Path(str(store) + ".PWNED")


def _pickle_program(marker: Path) -> bytes:
    """A protocol-0 pickle program calling ``os.mkdir(marker)`` (built by hand, never run)."""
    return f"cos\nmkdir\n(V{marker}\ntR.".encode()


def attribute_wrong_type(store: Path, scan: int) -> None:
    """The scan attribute rest_freq_hz is a string that is not a number."""
    import zarr

    group = zarr.open_group(str(_group_dir(store, scan)), mode="r+")
    group.attrs["rest_freq_hz"] = "230.5 GHz"


# -- benign oddities: the scan must still calibrate ------------------------------------------

def huge_attribute(store: Path, scan: int) -> None:
    """A 50 MB string attribute ('notes') on the scan group."""
    import zarr

    group = zarr.open_group(str(_group_dir(store, scan)), mode="r+")
    group.attrs["notes"] = "x" * HUGE_ATTRIBUTE_BYTES


def hostile_attributes(store: Path, scan: int) -> None:
    """Scan attributes holding path-traversal and pickle/code-looking strings
    (:data:`HOSTILE_ATTRIBUTES`): copied as inert text at most, never used as a path."""
    import zarr

    group = zarr.open_group(str(_group_dir(store, scan)), mode="r+")
    group.attrs.update(HOSTILE_ATTRIBUTES)


# -- issue 12: types, bounds, containment, integrity, tuning, no false success ----------------

def _edit_metadata(store: Path, scan: int, path: str, edit: Callable[[dict[str, Any]], None]
                   ) -> None:
    from calpipe.testing import edit_metadata

    edit_metadata(store, scan, path, edit)


def non_numeric_coordinates(store: Path, scan: int) -> None:
    """source/otf_lon stored as strings ("0.1", ...) instead of numbers."""
    values = read_array(store, scan, "source/otf_lon")
    replace_array(store, scan, "source/otf_lon",
                  np.array([str(v) for v in values.ravel().tolist()],
                           dtype=object).reshape(values.shape))


def non_numeric_lloadsn(store: Path, scan: int) -> None:
    """source/lloadsn stored as strings (breaks the Snakemake scan listing if unguarded)."""
    values = read_array(store, scan, "source/lloadsn")
    if has_own_calibration(store, scan):
        delete_array(store, scan, "calibration")  # else lloadsn is not needed
    replace_array(store, scan, "source/lloadsn", np.array([f"scan {v}" for v in values.tolist()],
                                                          dtype=object))


def nan_coordinates(store: Path, scan: int) -> None:
    """source/otf_lat of dump 0, subscan 1 is NaN."""
    values = read_array(store, scan, "source/otf_lat").astype(np.float64)
    values[(0, 1) if values.ndim == 2 else (1,)] = np.nan
    _overwrite(store, scan, "source/otf_lat", values)


def tiny_elevation(store: Path, scan: int) -> None:
    """source/elevation of subscan 2 is 1e-6 rad (positive, far below min_elevation_deg)."""
    _set_metadata(store, scan, "source/elevation", 2, 1e-6)


def _chunk_key(meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if meta.get("zarr_format") == 2:
        return meta, "chunks"
    return meta["chunk_grid"]["configuration"], "chunk_shape"


def zero_chunk_shape(store: Path, scan: int) -> None:
    """source/data_5d declares a chunk shape of zeros (a ZeroDivisionError in zarr)."""
    def edit(meta: dict[str, Any]) -> None:
        box, key = _chunk_key(meta)
        box[key] = [0] * len(box[key])

    _edit_metadata(store, scan, "source/data_5d", edit)


def huge_declared_shape(store: Path, scan: int) -> None:
    """source/data_5d declares 2**40 channels (8 PiB as float64): refused before allocating."""
    def edit(meta: dict[str, Any]) -> None:
        meta["shape"][0] = 2**40

    _edit_metadata(store, scan, "source/data_5d", edit)


def tiny_chunks(store: Path, scan: int) -> None:
    """source/data_5d declares 2**20 channels in chunks of one sample: 8e7 chunks (within the
    memory budget, but reading them would take hours)."""
    def edit(meta: dict[str, Any]) -> None:
        meta["shape"][0] = 2**20
        box, key = _chunk_key(meta)
        box[key] = [1] * len(box[key])

    _edit_metadata(store, scan, "source/data_5d", edit)


def fifo_chunk(store: Path, scan: int) -> None:
    """The second chunk file of source/data_5d is a FIFO (opening it would block forever)."""
    from calpipe.testing import chunk_files

    chunk = chunk_files(store, scan, "source/data_5d")[1]
    chunk.unlink()
    os.mkfifo(chunk)


def symlink_outside(store: Path, scan: int) -> None:
    """The first chunk file of source/mjd is a symbolic link to a file outside the store."""
    from calpipe.testing import chunk_files

    chunk = chunk_files(store, scan, "source/mjd")[0]
    chunk.unlink()
    chunk.symlink_to(Path(__file__).resolve())


def missing_group_json(store: Path, scan: int) -> None:
    """The scan group's zarr metadata file (zarr.json / .zgroup) is deleted."""
    from calpipe.testing import metadata_file

    metadata_file(store, scan, "").unlink()


def missing_source_json(store: Path, scan: int) -> None:
    """The source/ group's zarr metadata file is deleted (it used to make the scan look like a
    calibration-only scan: silently not calibrated)."""
    from calpipe.testing import metadata_file

    metadata_file(store, scan, "source").unlink()


def truncated_blosc_chunk(store: Path, scan: int) -> None:
    """source/data_5d rewritten with the blosc codec (as Zarr v2 stores have it), then its
    first chunk file cut to half its size (blosc decodes such a frame from foreign memory)."""
    import zarr


    values = read_array(store, scan, "source/data_5d")
    adir = array_dir(store, scan, "source/data_5d")
    fmt: Literal[2, 3] = 3 if (Path(store) / "zarr.json").exists() else 2
    if fmt == 3:
        comp: Any = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    else:
        import numcodecs

        comp = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    shutil.rmtree(adir)
    arr = zarr.create_array(str(adir), shape=values.shape, dtype=np.int32, zarr_format=fmt,
                            chunks=values.shape[:4] + (1,), compressors=comp)
    arr[...] = values
    truncate_chunk(store, scan, "source/data_5d", 0, 0.5)


def _set_attribute(name: str, value: Any) -> Injector:
    def inject(store: Path, scan: int) -> None:
        import zarr

        group = zarr.open_group(str(_group_dir(store, scan)), mode="r+")
        group.attrs[name] = value

    inject.__doc__ = f"Scan attribute {name} = {value!r}."
    inject.__name__ = f"attribute_{name}"
    return inject


boolean_gain = _set_attribute("gs_xs", True)
absurd_gain = _set_attribute("gs_xs", 1e-12)


def loads_other_tuning(store: Path, scan: int) -> None:
    """calibration/signal_freq of the scan's own loads is 1 GHz off the science scan's."""
    _own_calibration(store, scan)
    values = read_array(store, scan, "calibration/signal_freq")
    _overwrite(store, scan, "calibration/signal_freq", values + 1e9)


def all_on_filled(store: Path, scan: int) -> None:
    """Every ON / OTF-ON subscan of source/data_5d is the int32 fill value (OFFs intact)."""
    counts = read_array(store, scan, "source/data_5d").copy()
    on = [i for i, m in enumerate(_modes(store, scan, "source/sobsmode")) if m.endswith("ON")]
    counts[..., on] = FILL_VALUE
    _overwrite(store, scan, "source/data_5d", counts)


# -- store level ------------------------------------------------------------------------------

def corrupt_root_json(store: Path) -> None:
    """The store root's zarr.json (.zgroup) is not JSON: fatal (StoreError, exit 1)."""
    corrupt_metadata(store)


def duplicate_scan_number(store: Path, scan: int = 1001) -> None:
    """A second group for an existing scan number (``scan_1001`` next to ``scan_001001``):
    fatal (StoreError, exit 1) — calpipe cannot tell which one is the scan."""
    add_group(store, f"scan_{scan}")


def odd_group_names(store: Path, template_scan: int = 1001) -> list[str]:
    """Directories named :data:`ODD_GROUP_NAMES` (and :data:`NESTED_GROUP`) at the store root,
    each a full copy of scan ``template_scan``'s group, created on disk (zarr refuses some
    names). They must be ignored (listed as ignored groups) and never become output paths.
    Returns the names created at the root.
    """
    template = _group_dir(store, template_scan)
    created = []
    for name in ODD_GROUP_NAMES:
        shutil.copytree(template, Path(store) / name)
        created.append(name)
    nested = Path(store) / NESTED_GROUP
    shutil.copytree(template, nested)
    return created


# -- registries -------------------------------------------------------------------------------

def _x(error: str, stage: str, array: str, problem: str) -> Expected:
    return Expected(error, stage, array, problem)


_CAL = "calibration"
SCAN_FAULTS: dict[str, ScanFault] = {f.name: f for f in (
    ScanFault("missing_hot", "missing HOT subscans", missing_hot,
              _x("MissingLoadError", "resolve", f"{_CAL}/sobsmode", "no HOT subscan"), True),
    ScanFault("missing_cold", "missing COLD subscans", missing_cold,
              _x("MissingLoadError", "resolve", f"{_CAL}/sobsmode", "no COLD subscan"), True),
    ScanFault("missing_off", "missing OFF subscans", missing_off,
              _x("NoReferenceError", "prepare", "source/sobsmode", "no OFF subscan")),
    ScanFault("missing_on", "missing ON subscans", missing_on,
              _x("NoReferenceError", "prepare", "source/sobsmode", "no ON subscan")),
    ScanFault("hot_not_above_cold", "HOT <= COLD on all channels", hot_not_above_cold,
              _x("BadLoadError", "resolve", f"{_CAL}/data_5d", "HOT <= COLD"), True),
    ScanFault("thot_nan", "load temperature NaN", thot_nan,
              _x("BadLoadError", "resolve", f"{_CAL}/thot", "not finite and positive"), True),
    ScanFault("tcold_zero", "load temperature zero", tcold_zero,
              _x("BadLoadError", "resolve", f"{_CAL}/tcold", "not finite and positive"), True),
    ScanFault("thot_negative", "load temperature negative", thot_negative,
              _x("BadLoadError", "resolve", f"{_CAL}/thot", "not finite and positive"), True),
    ScanFault("all_fill", "all-fill data", all_fill,
              _x("L0FormatError", "prepare", "source/data_5d", "fill value")),
    ScanFault("metadata_nan", "NaN in metadata", metadata_nan,
              _x("MetadataError", "load", "source/tamb", "non-finite")),
    ScanFault("metadata_inf", "inf in metadata", metadata_inf,
              _x("MetadataError", "load", "source/mjd", "non-finite")),
    ScanFault("elevation_zero", "elevation <= 0 deg (0)", elevation_zero,
              _x("MetadataError", "load", "source/elevation", "(0, 90] deg")),
    ScanFault("elevation_negative", "elevation <= 0 deg (-5)", elevation_negative,
              _x("MetadataError", "load", "source/elevation", "(0, 90] deg")),
    ScanFault("elevation_above_90", "elevation > 90 deg (95)", elevation_above_90,
              _x("MetadataError", "load", "source/elevation", "(0, 90] deg")),
    ScanFault("unknown_sobsmode", "unknown sobsmode", unknown_sobsmode,
              _x("MetadataError", "load", "source/sobsmode", "SKYDIP")),
    ScanFault("data_shape_mismatch", "data_5d shape disagreeing with the metadata",
              data_shape_mismatch,
              _x("L0FormatError", "load", "source/sobsmode", "data_5d has S =")),
    ScanFault("data_wrong_dtype", "wrong dtype (data_5d float32)", data_wrong_dtype,
              _x("L0FormatError", "load", "source/data_5d", "expected dtype int32")),
    ScanFault("metadata_wrong_dtype", "wrong dtype (elevation as strings)",
              metadata_wrong_dtype,
              _x("L0FormatError", "load", "source/elevation", "numeric dtype")),
    ScanFault("missing_metadata", "a missing metadata array", missing_metadata,
              _x("L0FormatError", "load", "source/mjd", "missing array")),
    ScanFault("lloadsn_missing_scan", "lloadsn pointing to a missing scan",
              lloadsn_missing_scan,
              _x("MissingLoadError", "load", "source/lloadsn", "not in the store")),
    ScanFault("lloadsn_without_calibration", "lloadsn pointing to a scan without calibration",
              lloadsn_without_calibration,
              _x("MissingLoadError", "load", "source/lloadsn", "no calibration/ group")),
    ScanFault("truncated_chunk", "a truncated chunk file", truncated_chunk,
              _x("L0FormatError", "load", "source/data_5d", "cannot read data")),
    ScanFault("truncated_metadata_chunk", "a truncated chunk file (metadata)",
              truncated_metadata_chunk,
              _x("L0FormatError", "load", "source/mjd", "cannot read data")),
    ScanFault("deleted_chunk", "a deleted chunk file", deleted_chunk,
              _x("L0FormatError", "load", "source/data_5d", "chunk file(s) missing")),
    ScanFault("corrupt_group_json", "a corrupt zarr.json (scan group)", corrupt_group_json,
              _x("L0FormatError", "load", "scan_", "cannot open group")),
    ScanFault("corrupt_array_json", "a corrupt zarr.json (array)", corrupt_array_json,
              _x("L0FormatError", "load", "source/data_5d", "unreadable array metadata")),
    ScanFault("sky_hotter_than_hot_load", "a pwv fit that cannot converge (sky > HOT)",
              sky_hotter_than_hot_load,
              _x("AtmosphereError", "atmosphere", "pwv", "sky hotter than the hot load")),
    ScanFault("duplicated_subscan", "duplicated subscans", duplicated_subscan,
              _x("MetadataError", "prepare", "source/mjd", "not strictly increasing")),
    ScanFault("mjd_not_monotonic", "non-monotonic mjd", mjd_not_monotonic,
              _x("MetadataError", "prepare", "source/mjd", "not strictly increasing")),
    ScanFault("pickle_codec", "pickle payload in an array (codec)", pickle_codec,
              _x("L0FormatError", "load", "source/sobsmode", "unreadable array metadata")),
    ScanFault("attribute_wrong_type", "a scan attribute of the wrong type",
              attribute_wrong_type,
              _x("MetadataError", "calibrate", "attrs/rest_freq_hz", "not a number")),
    ScanFault("huge_attribute", "a 50 MB string attribute on a scan group", huge_attribute,
              None),
    ScanFault("hostile_attributes", "path traversal / pickle-looking attribute values",
              hostile_attributes, None),
    # issue 12
    ScanFault("non_numeric_coordinates", "non-numeric coordinates (otf_lon as strings)",
              non_numeric_coordinates,
              _x("L0FormatError", "load", "source/otf_lon", "numeric dtype")),
    ScanFault("non_numeric_lloadsn", "non-numeric lloadsn", non_numeric_lloadsn,
              _x("L0FormatError", "load", "source/lloadsn", "numeric dtype")),
    ScanFault("nan_coordinates", "NaN coordinates", nan_coordinates,
              _x("MetadataError", "load", "source/otf_lat", "non-finite")),
    ScanFault("tiny_elevation", "a tiny positive elevation (1e-6 rad)", tiny_elevation,
              _x("MetadataError", "load", "source/elevation", "min_elevation_deg")),
    ScanFault("zero_chunk_shape", "a zero chunk shape", zero_chunk_shape,
              _x("L0FormatError", "load", "source/data_5d", "invalid chunk shape")),
    ScanFault("huge_declared_shape", "a declared shape beyond the memory budget",
              huge_declared_shape,
              _x("L0FormatError", "load", "source/data_5d", "max_scan_gib")),
    ScanFault("tiny_chunks", "a huge chunk count (tiny chunks)", tiny_chunks,
              _x("L0FormatError", "load", "source/data_5d", "max_chunks_per_array")),
    ScanFault("fifo_chunk", "a FIFO as a chunk file", fifo_chunk,
              _x("L0FormatError", "load", "source/data_5d", "is a FIFO")),
    ScanFault("symlink_outside", "a chunk file linked to a file outside the store",
              symlink_outside,
              _x("L0FormatError", "load", "source/mjd", "outside the store")),
    ScanFault("missing_group_json", "a scan group without zarr.json", missing_group_json,
              _x("L0FormatError", "load", "scan_", "no zarr metadata file")),
    ScanFault("missing_source_json", "a source/ group without zarr.json", missing_source_json,
              _x("L0FormatError", "load", "source/", "no zarr metadata file")),
    ScanFault("truncated_blosc_chunk", "a half-truncated blosc chunk", truncated_blosc_chunk,
              _x("L0FormatError", "load", "source/data_5d", "blosc header says")),
    ScanFault("boolean_gain", "an instrument attribute of the wrong type (gs_xs = true)",
              boolean_gain, _x("MetadataError", "resolve", "attrs/gs_xs", "not a number")),
    ScanFault("absurd_gain", "absurd instrument gains (gs_xs = 1e-12)", absurd_gain,
              _x("MetadataError", "resolve", "attrs/gs_xs", "signal weight")),
    ScanFault("loads_other_tuning", "loads from another tuning (signal_freq + 1 GHz)",
              loads_other_tuning,
              _x("MetadataError", "resolve", "calibration/signal_freq",
                 "another frequency set-up"), True),
    ScanFault("all_on_filled", "all ON subscans filled", all_on_filled,
              _x("NoValidDataError", "calibrate", "source/data_5d", "every ON sample")),
)}


@dataclass(frozen=True)
class StoreFault:
    """A store-level fault: ``fatal`` ones stop the run (StoreError, exit 1), the others are
    ignored with a warning and change no scan's result."""

    name: str
    title: str
    inject: Callable[[Path], Any]
    fatal: bool
    message: str  # a phrase the error / warning contains


STORE_FAULTS: dict[str, StoreFault] = {f.name: f for f in (
    StoreFault("corrupt_root_json", "a corrupt zarr.json (store root)", corrupt_root_json,
               True, "cannot open L0 store"),
    StoreFault("duplicate_scan_number", "two groups for one scan number",
               duplicate_scan_number, True, "two groups for scan 1001"),
    StoreFault("odd_group_names", "scan group names that are not scan_ + digits "
               "(incl. '..', path separators, non-ASCII digits)", odd_group_names, False,
               "not scan_ + digits"),
)}


def inject(store: str | Path, scan: int, name: str) -> ScanFault:
    """Apply scan fault ``name`` to ``scan`` of ``store``; returns its registry entry."""
    fault = SCAN_FAULTS[name]
    fault.inject(Path(store), scan)
    return fault


__all__ = [
    "HOSTILE_ATTRIBUTES",
    "ODD_GROUP_NAMES",
    "SCAN_FAULTS",
    "STORE_FAULTS",
    "Expected",
    "ScanFault",
    "StoreFault",
    "has_own_calibration",
    "inject",
    "pickle_marker",
]
