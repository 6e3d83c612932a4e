"""L0 session reader (DESIGN 2.1, the CCAT layout; Zarr v3, v2 readable).

``open_session`` opens a store once; ``Session.scans()`` lists scan numbers; ``load_scan`` returns
the source subscans of one scan and ``load_calibration`` its HOT/COLD snapshot (its own
``calibration/`` group, else the one of scan ``lloadsn``). Counts become float64 with the int32
fill value (-2**31) mapped to NaN. Every per-scan problem raises a ``CalibrationError`` subclass
that names the scan and the array; a store that cannot be opened raises ``StoreError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import (
    CalibrationError,
    L0FormatError,
    MetadataError,
    MissingLoadError,
    StoreError,
)

log = logging.getLogger(__name__)

FILL_VALUE = np.iinfo(np.int32).min
# ASCII digits only and a full match (issue 6): ``\d`` also matches non-ASCII digits, which
# int() accepts ("scan_\u0661\u0660\u0660\u0661" parsed as scan 1001 and clashed with
# scan_001001, a fatal StoreError), and ``$`` also matches before a trailing newline.
SCAN_GROUP = re.compile(r"scan_([0-9]{1,9})", re.ASCII)
SOURCE_MODES = ("ON", "OFF", "OTF-ON", "OTF-OFF")
CALIBRATION_MODES = ("HOT", "COLD", "COL", "SKY", "ZERO")

# name -> (required, numpy kind, dtype for the in-memory value)
SUBSCAN_ARRAYS: dict[str, tuple[bool, str]] = {
    "mjd": (True, "float64"),
    "exptime": (True, "float64"),
    "elevation": (True, "float64"),
    "azimuth": (False, "float64"),
    "pamb": (True, "float64"),
    "tamb": (True, "float64"),
    "signal_freq": (True, "float64"),
    "image_freq": (True, "float64"),
    "freq_res": (True, "float64"),
    "freq_off": (False, "float64"),
    "ref_channel": (True, "float64"),
    "lloadsn": (False, "int64"),
}
STRING_ARRAYS = ("sobsmode", "frontend_backends", "raw_fits_headers")


def scan_group_name(scan: int) -> str:
    """``scan_NNNNNN``: six digits, zero padded (more digits when needed)."""
    if not isinstance(scan, int | np.integer) or scan < 0:
        raise ValueError(f"scan number must be a non-negative integer, got {scan!r}")
    return f"scan_{int(scan):06d}"


def parse_scan_group(name: str) -> int | None:
    """Scan number of a group name, or None when the name is not ``scan_`` + digits."""
    match = SCAN_GROUP.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class SubscanMetadata:
    """Per-subscan metadata [S] shared by the source and calibration groups."""

    sobsmode: np.ndarray  # [S] str
    mjd: np.ndarray  # [S] f64
    exptime: np.ndarray  # [S] s
    elevation: np.ndarray  # [S] rad
    azimuth: np.ndarray  # [S] rad
    pamb: np.ndarray  # [S] Torr
    tamb: np.ndarray  # [S] K
    signal_freq: np.ndarray  # [S] Hz
    image_freq: np.ndarray  # [S] Hz
    freq_res: np.ndarray  # [S] Hz
    freq_off: np.ndarray  # [S] Hz
    ref_channel: np.ndarray  # [S]
    lloadsn: np.ndarray | None  # [S] i64

    @property
    def n_subscans(self) -> int:
        return int(self.sobsmode.shape[0])

    def frequency_axes(self, n_channels: int, subscan: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Sky frequencies (Hz) of both sidebands per channel for one subscan.

        nu_sig(c) = signal_freq + freq_off + (c - ref_channel) * freq_res
        nu_img(c) = image_freq + freq_off - (c - ref_channel) * freq_res
        """
        c = np.arange(n_channels, dtype=np.float64) - self.ref_channel[subscan]
        nu_sig = self.signal_freq[subscan] + self.freq_off[subscan] + c * self.freq_res[subscan]
        nu_img = self.image_freq[subscan] + self.freq_off[subscan] - c * self.freq_res[subscan]
        return nu_sig, nu_img


@dataclass(frozen=True)
class ScanData:
    """The source (science) part of one scan, counts as float64 with NaN for fill."""

    scan: int
    attrs: Mapping[str, Any]
    counts: np.ndarray  # [C, D, R, A, S] f64
    meta: SubscanMetadata
    otf_lon: np.ndarray  # [D, S] deg
    otf_lat: np.ndarray  # [D, S] deg
    pixel_offset_lon: np.ndarray  # [R, A, S] deg
    pixel_offset_lat: np.ndarray  # [R, A, S] deg
    frontend_backends: np.ndarray  # [S] str
    has_own_calibration: bool
    content_digest: str = ""  # sha1 of the raw counts and subscan metadata
    # optional per-channel sideband gains source/gs_xs, source/gi_xi: [C] or [C, R, A]
    sideband_gains: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        c, d, r, a, s = self.counts.shape
        return c, d, r, a, s

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes)


@dataclass(frozen=True)
class CalibrationSnapshot:
    """HOT / COLD (/ SKY / ZERO) subscans used to calibrate a scan."""

    scan: int  # the scan whose calibration/ group this is
    for_scan: int  # the science scan it serves
    counts: np.ndarray  # [C, D, R, A, S] f64
    meta: SubscanMetadata
    thot: np.ndarray  # [S] K
    tcold: np.ndarray  # [S] K
    content_digest: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes)


@dataclass
class Session:
    """An opened L0 session store. Open once, then load scans from it."""

    path: Path
    root: Any  # zarr.Group
    zarr_format: int
    _scan_groups: dict[int, str] = field(default_factory=dict)
    ignored_groups: list[str] = field(default_factory=list)

    def scans(self) -> list[int]:
        """All scan numbers in the store, ascending (calibration-only scans included)."""
        return sorted(self._scan_groups)

    def source_scans(self) -> list[int]:
        """Scans with a ``source/`` group: the ones to calibrate. A scan whose group cannot be
        opened is listed too, so that it fails (and is recorded) on its own."""
        found = []
        for n in self.scans():
            try:
                if self.has_source(n):
                    found.append(n)
            except CalibrationError:
                found.append(n)
        return found

    def has_source(self, scan: int) -> bool:
        return _has_member(self._group(scan), "source")

    def has_calibration(self, scan: int) -> bool:
        return _has_member(self._group(scan), "calibration")

    def attrs(self, scan: int) -> dict[str, Any]:
        return dict(self._group(scan).attrs)

    def _group(self, scan: int) -> Any:
        try:
            name = self._scan_groups[scan]
        except KeyError:
            raise MissingLoadError("no such scan group in the store", scan=scan) from None
        try:
            return self.root[name]
        except Exception as exc:  # zarr raises several types for damaged metadata
            raise L0FormatError(f"cannot open group {name}: {exc}", scan=scan) from exc

    # -- loading --------------------------------------------------------------------------
    def load_scan(self, scan: int) -> ScanData:
        """Read and validate the source group of ``scan``."""
        group = self._group(scan)
        if not _has_member(group, "source"):
            raise L0FormatError("scan has no source/ group (calibration-only)", scan=scan)
        src = _subgroup(group, "source", scan)
        digest = _content_hash()
        counts = _read_counts(src, scan, "source", digest)
        c, d, r, a, s = counts.shape
        meta = _read_metadata(src, scan, "source", s, SOURCE_MODES)
        _digest_metadata(digest, meta)
        if not _has_member(src, "lloadsn") and not _has_member(group, "calibration"):
            raise L0FormatError(
                "missing array (needed: no calibration/ group in this scan)",
                scan=scan,
                array="source/lloadsn",
            )
        otf_lon = _read_otf(src, "otf_lon", scan, d, s)
        otf_lat = _read_otf(src, "otf_lat", scan, d, s)
        pix_lon = _read_pixel_offset(src, "pixel_offset_lon", scan, r, a, s)
        pix_lat = _read_pixel_offset(src, "pixel_offset_lat", scan, r, a, s)
        fb = _read_strings(src, "frontend_backends", scan, s, required=False)
        if fb is None:
            fb = np.array([""] * s)
        gains = _read_sideband_gains(src, scan, c, r, a)
        if gains is not None:
            for g in gains:
                digest.update(np.ascontiguousarray(g, dtype="<f8").tobytes())
        return ScanData(
            scan=scan,
            attrs=dict(group.attrs),
            counts=counts,
            meta=meta,
            otf_lon=otf_lon,
            otf_lat=otf_lat,
            pixel_offset_lon=pix_lon,
            pixel_offset_lat=pix_lat,
            frontend_backends=fb,
            has_own_calibration=_has_member(group, "calibration"),
            content_digest=digest.hexdigest(),
            sideband_gains=gains,
        )

    def calibration_scan_for(self, scan: int, lloadsn: np.ndarray | None = None) -> int:
        """Which scan's ``calibration/`` group serves ``scan`` (DESIGN 2.1)."""
        if self.has_calibration(scan):
            return scan
        if lloadsn is None:
            src = _subgroup(self._group(scan), "source", scan)
            arr = _open_array(src, "lloadsn", scan, "source")
            lloadsn = np.asarray(arr[...])
        values = np.unique(np.asarray(lloadsn).astype(np.int64))
        if values.size == 0:
            raise MetadataError("empty lloadsn", scan=scan, array="source/lloadsn")
        target = int(values[0])
        if values.size > 1:
            log.warning("scan %d: lloadsn differs between subscans %s; using %d",
                        scan, values.tolist(), target)
        if target not in self._scan_groups:
            raise MissingLoadError(
                f"lloadsn points to scan {target}, which is not in the store",
                scan=scan,
                array="source/lloadsn",
            )
        if not self.has_calibration(target):
            raise MissingLoadError(
                f"lloadsn points to scan {target}, which has no calibration/ group",
                scan=scan,
                array="source/lloadsn",
            )
        return target

    def load_calibration(self, scan: int, lloadsn: np.ndarray | None = None) -> CalibrationSnapshot:
        """The HOT/COLD snapshot for science scan ``scan``."""
        cal_scan = self.calibration_scan_for(scan, lloadsn)
        group = _subgroup(self._group(cal_scan), "calibration", scan)
        where = "calibration" if cal_scan == scan else f"calibration (of scan {cal_scan})"
        digest = _content_hash()
        counts = _read_counts(group, scan, where, digest)
        s = counts.shape[4]
        meta = _read_metadata(group, scan, where, s, CALIBRATION_MODES, frequencies_required=False)
        thot = _read_numeric(group, "thot", scan, where, s, "float64")
        tcold = _read_numeric(group, "tcold", scan, where, s, "float64")
        _digest_metadata(digest, meta)
        digest.update(thot.tobytes() + tcold.tobytes())
        return CalibrationSnapshot(
            scan=cal_scan, for_scan=scan, counts=counts, meta=meta, thot=thot, tcold=tcold,
            content_digest=digest.hexdigest(),
        )


def open_session(path: str | Path) -> Session:
    """Open an L0 session store (Zarr v3 or v2) read-only and index its scan groups."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise StoreError(f"L0 store {path} does not exist")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # any zarr/JSON failure at the root is fatal
        raise StoreError(f"cannot open L0 store {path}: {exc}") from exc
    # Issue 6: list the children from the directory, not with ``root.members()``, which opens
    # and parses every child's metadata - one scan group with a 50 MB attribute (or a campaign
    # of thousands of scans) then cost every open, i.e. every Snakemake job. A child is a node
    # when it holds a metadata file; a damaged one is listed and fails on its own when read.
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and any(
        (p / meta).is_file() for meta in ("zarr.json", ".zgroup", ".zarray")))
    session = Session(path=path, root=root, zarr_format=int(root.metadata.zarr_format))
    for name in names:
        number = parse_scan_group(name)
        if number is None:
            session.ignored_groups.append(name)
            log.warning("L0 store %s: ignoring group %r (not scan_ + digits)", path, name)
            continue
        if number in session._scan_groups:
            raise StoreError(f"L0 store {path}: two groups for scan {number}")
        session._scan_groups[number] = name
    return session


def iter_scan_groups(root: Any) -> Iterator[tuple[int, str]]:
    for name in sorted(_member_names(root)):
        number = parse_scan_group(name)
        if number is not None:
            yield number, name


# -- low-level readers ------------------------------------------------------------------------

def _member_names(group: Any) -> set[str]:
    return {name for name, _ in group.members()}


def _has_member(group: Any, name: str) -> bool:
    """Whether ``group`` has a child ``name``, opening only that child (``members()`` parses
    every sibling, so one corrupt zarr.json would break every lookup). A child whose metadata
    is unreadable counts as present: the read that follows reports it with scan and array.
    """
    try:
        group[name]
    except KeyError:
        return False
    except Exception:
        return True
    return True


def _subgroup(group: Any, name: str, scan: int) -> Any:
    try:
        sub = group[name]
    except KeyError:
        raise L0FormatError("group missing", scan=scan, array=f"{name}/") from None
    except Exception as exc:
        raise L0FormatError(f"unreadable group: {exc}", scan=scan, array=f"{name}/") from exc
    import zarr

    if not isinstance(sub, zarr.Group):
        raise L0FormatError("expected a group, found an array", scan=scan, array=f"{name}/")
    return sub


def _open_array(group: Any, name: str, scan: int, where: str) -> Any:
    import zarr

    try:
        arr = group[name]
    except KeyError:
        raise L0FormatError("missing array", scan=scan, array=f"{where}/{name}") from None
    except Exception as exc:
        raise L0FormatError(
            f"unreadable array metadata: {exc}", scan=scan, array=f"{where}/{name}"
        ) from exc
    if not isinstance(arr, zarr.Array):
        raise L0FormatError("expected an array, found a group", scan=scan,
                            array=f"{where}/{name}")
    return arr


def _read(arr: Any, scan: int, label: str, selection: Any = Ellipsis) -> np.ndarray:
    try:
        return np.asarray(arr[selection])
    except Exception as exc:  # truncated / corrupt chunk, codec error
        raise L0FormatError(f"cannot read data: {type(exc).__name__}: {exc}", scan=scan,
                            array=label) from exc


def _read_counts(group: Any, scan: int, where: str, digest: Any = None) -> np.ndarray:
    """data_5d [C, D, R, A, S] int32 -> float64, fill -> NaN, read one subscan at a time.

    ``digest`` (a hashlib object) is updated with the raw int32 bytes of every subscan.
    """
    label = f"{where}/data_5d"
    arr = _open_array(group, "data_5d", scan, where)
    if len(arr.shape) != 5:
        raise L0FormatError(f"expected 5 dimensions [C, D, R, A, S], got shape {arr.shape}",
                            scan=scan, array=label)
    if np.dtype(arr.dtype) != np.int32:
        raise L0FormatError(f"expected dtype int32, got {arr.dtype}", scan=scan, array=label)
    if min(arr.shape) == 0:
        raise L0FormatError(f"empty array, shape {arr.shape}", scan=scan, array=label)
    # zarr silently reads an absent chunk as the array's fill_value: unless that is the int32
    # fill (absent = no data -> NaN), a deleted chunk file would become fake counts.
    if arr.fill_value != FILL_VALUE and arr.nchunks_initialized < arr.nchunks:
        raise L0FormatError(f"{arr.nchunks - arr.nchunks_initialized} of {arr.nchunks} chunk "
                            f"file(s) missing (fill_value {arr.fill_value} is not the int32 "
                            "fill)", scan=scan, array=label)
    # subscan-major memory: out[..., s] is one contiguous block (CCAT keeps a Vec of [C, D, R, A]
    # arrays for the same reason), while the public shape stays [C, D, R, A, S]
    c, d, r, a, n_s = arr.shape
    out = np.empty((n_s, c, d, r, a), dtype=np.float64).transpose(1, 2, 3, 4, 0)
    n_valid = 0
    for s in range(n_s):
        raw = _read(arr, scan, label, (..., s))
        if digest is not None:
            digest.update(np.ascontiguousarray(raw).tobytes())
        np.copyto(out[..., s], raw, casting="unsafe")
        fill = raw == FILL_VALUE
        n_fill = int(np.count_nonzero(fill))
        if n_fill:  # the scatter costs a pass over the mask: only when there is fill
            out[..., s][fill] = np.nan
        n_valid += fill.size - n_fill
    # issue 6: an all-fill array is "no data", whatever the configuration (with a fixed pwv it
    # would otherwise become an all-NaN L1 group reported as calibrated)
    if n_valid == 0:
        raise L0FormatError(f"every sample is the int32 fill value ({FILL_VALUE}): no data",
                            scan=scan, array=label)
    return out


def _content_hash() -> Any:
    """The hash behind content digests: sha1 (identification, not security; 2-7x faster
    than blake2b/sha256 here, and it runs over every raw byte)."""
    return hashlib.sha1(usedforsecurity=False)


def _digest_metadata(digest: Any, meta: SubscanMetadata) -> None:
    for f in dataclasses.fields(meta):
        value = getattr(meta, f.name)
        if value is not None:
            digest.update(f.name.encode() + np.ascontiguousarray(value).astype(str).tobytes()
                          if value.dtype.kind in "OUT" else f.name.encode() + value.tobytes())


def _read_strings(group: Any, name: str, scan: int, n: int, *, required: bool,
                  where: str = "source") -> np.ndarray | None:
    if not _has_member(group, name):
        if required:
            raise L0FormatError("missing array", scan=scan, array=f"{where}/{name}")
        return None
    arr = _open_array(group, name, scan, where)
    values = _read(arr, scan, f"{where}/{name}")
    if values.shape != (n,):
        raise L0FormatError(f"expected shape ({n},) [S] (data_5d has S = {n} subscans), "
                            f"got {values.shape}", scan=scan,
                            array=f"{where}/{name}")
    if values.dtype.kind not in "OUT":
        raise L0FormatError(f"expected strings, got dtype {values.dtype}", scan=scan,
                            array=f"{where}/{name}")
    return np.array([str(v) for v in values.tolist()])


def _read_numeric(group: Any, name: str, scan: int, where: str, n: int, dtype: str,
                  *, required: bool = True) -> np.ndarray:
    if not _has_member(group, name):
        if required:
            raise L0FormatError("missing array", scan=scan, array=f"{where}/{name}")
        return np.zeros(n, dtype=dtype)
    arr = _open_array(group, name, scan, where)
    values = _read(arr, scan, f"{where}/{name}")
    if values.dtype.kind not in "iuf":
        raise L0FormatError(f"expected a numeric dtype, got {values.dtype}", scan=scan,
                            array=f"{where}/{name}")
    if values.shape != (n,):
        raise L0FormatError(f"expected shape ({n},) [S] (data_5d has S = {n} subscans), "
                            f"got {values.shape}", scan=scan,
                            array=f"{where}/{name}")
    return values.astype(dtype)


def _read_metadata(group: Any, scan: int, where: str, n: int, modes: tuple[str, ...],
                   *, frequencies_required: bool = True) -> SubscanMetadata:
    sobsmode = _read_strings(group, "sobsmode", scan, n, required=True, where=where)
    assert sobsmode is not None
    norm = np.char.upper(np.char.strip(sobsmode))
    unknown = sorted(set(norm.tolist()) - set(modes))
    if unknown:
        raise MetadataError(f"unknown sobsmode value(s) {unknown}; expected one of {list(modes)}",
                            scan=scan, array=f"{where}/sobsmode")
    values: dict[str, np.ndarray] = {}
    for name, (required, dtype) in SUBSCAN_ARRAYS.items():
        if name == "lloadsn":
            continue
        needed = required and (frequencies_required or name in ("mjd", "exptime"))
        values[name] = _read_numeric(group, name, scan, where, n, dtype, required=needed)
    lloadsn = None
    if _has_member(group, "lloadsn"):
        lloadsn = _read_numeric(group, "lloadsn", scan, where, n, "int64")
    _check_metadata(values, scan, where, frequencies_required)
    return SubscanMetadata(sobsmode=norm, lloadsn=lloadsn, **values)


def _check_metadata(v: dict[str, np.ndarray], scan: int, where: str, full: bool) -> None:
    def bad(name: str, what: str) -> MetadataError:
        return MetadataError(what, scan=scan, array=f"{where}/{name}")

    for name, arr in v.items():
        if not np.all(np.isfinite(arr)):
            idx = np.flatnonzero(~np.isfinite(arr)).tolist()
            raise bad(name, f"non-finite value in subscan(s) {idx}")
    if np.any(v["exptime"] <= 0):
        raise bad("exptime", "integration time must be > 0 s")
    if not full:
        return
    el = v["elevation"]
    if np.any((el <= 0) | (el > np.pi / 2 + 1e-6)):
        raise bad("elevation", f"elevation must be in (0, 90] deg, got {np.degrees(el).round(3)} "
                  "deg (the array is in radians)")
    if np.any(v["freq_res"] == 0):
        raise bad("freq_res", "channel width is zero")
    if np.any(v["signal_freq"] <= 0):
        raise bad("signal_freq", "sky frequency must be > 0 Hz")
    if np.any(v["tamb"] <= 0):
        raise bad("tamb", "ambient temperature must be > 0 K")
    if np.any(v["pamb"] <= 0):
        raise bad("pamb", "ambient pressure must be > 0 Torr")


def _read_otf(group: Any, name: str, scan: int, d: int, s: int) -> np.ndarray:
    """otf_lon / otf_lat as [S] (broadcast over dumps) or [D, S]; absent -> zeros."""
    if not _has_member(group, name):
        return np.zeros((d, s))
    values = _read(_open_array(group, name, scan, "source"), scan, f"source/{name}")
    if values.shape == (s,):
        return np.broadcast_to(values.astype(np.float64), (d, s)).copy()
    if values.shape == (d, s):
        return values.astype(np.float64)
    raise L0FormatError(f"expected shape ({s},) [S] or ({d}, {s}) [D, S], got {values.shape}",
                        scan=scan, array=f"source/{name}")


def _read_pixel_offset(group: Any, name: str, scan: int, r: int, a: int, s: int) -> np.ndarray:
    """pixel offsets as [R, A, S] or legacy [R, A] (broadcast over subscans); absent -> zeros."""
    if not _has_member(group, name):
        return np.zeros((r, a, s))
    values = _read(_open_array(group, name, scan, "source"), scan, f"source/{name}")
    if values.shape == (r, a, s):
        return values.astype(np.float64)
    if values.shape == (r, a):
        return np.repeat(values.astype(np.float64)[:, :, None], s, axis=2)
    raise L0FormatError(f"expected shape ({r}, {a}, {s}) [R, A, S] or ({r}, {a}) [R, A], "
                        f"got {values.shape}", scan=scan, array=f"source/{name}")


def _read_sideband_gains(group: Any, scan: int, c: int, r: int, a: int
                         ) -> tuple[np.ndarray, np.ndarray] | None:
    """Optional source/gs_xs and source/gi_xi (both or neither), [C] or [C, R, A], finite,
    >= 0, with gs_xs > 0 (issue 13: per-channel sideband gains)."""
    have = [_has_member(group, n) for n in ("gs_xs", "gi_xi")]
    if not any(have):
        return None
    if not all(have):
        missing = "gi_xi" if have[0] else "gs_xs"
        raise L0FormatError("per-channel sideband gains need both gs_xs and gi_xi",
                            scan=scan, array=f"source/{missing}")
    out = []
    for name in ("gs_xs", "gi_xi"):
        values = _read(_open_array(group, name, scan, "source"), scan, f"source/{name}")
        if values.shape not in ((c,), (c, r, a)):
            raise L0FormatError(f"expected shape ({c},) [C] or ({c}, {r}, {a}) [C, R, A], got "
                                f"{values.shape}", scan=scan, array=f"source/{name}")
        values = values.astype(np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise MetadataError("sideband gains must be finite and >= 0", scan=scan,
                                array=f"source/{name}")
        out.append(values)
    if out[0].shape != out[1].shape:
        raise L0FormatError(f"gs_xs {out[0].shape} and gi_xi {out[1].shape} differ in shape",
                            scan=scan, array="source/gi_xi")
    if np.any(out[0] <= 0):
        raise MetadataError("gs_xs must be > 0 in every channel", scan=scan,
                            array="source/gs_xs")
    return out[0], out[1]


def check_compatible(scan: ScanData, cal: CalibrationSnapshot) -> None:
    """The calibration snapshot must cover the same channels and pixels as the scan."""
    c, _, r, a, _ = scan.counts.shape
    cc, _, cr, ca, _ = cal.counts.shape
    if (c, r, a) != (cc, cr, ca):
        where = "calibration" if cal.scan == scan.scan else f"calibration of scan {cal.scan}"
        raise L0FormatError(
            f"calibration data_5d has [C, R, A] = {(cc, cr, ca)} but the source has {(c, r, a)}",
            scan=scan.scan, array=f"{where}/data_5d")


__all__ = [
    "CalibrationError",
    "CalibrationSnapshot",
    "ScanData",
    "Session",
    "SubscanMetadata",
    "check_compatible",
    "open_session",
    "parse_scan_group",
    "scan_group_name",
]
