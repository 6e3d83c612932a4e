"""L0 session reader (DESIGN 2.1, the CCAT layout; Zarr v3, v2 readable).

``open_session`` opens a store once; ``Session.scans()`` lists scan numbers; ``load_scan`` returns
the source subscans of one scan and ``load_calibration`` its HOT/COLD snapshot (its own
``calibration/`` group, else the one of scan ``lloadsn``). Counts become float64 with the int32
fill value (-2**31) mapped to NaN. Every per-scan problem raises a ``CalibrationError`` subclass
that names the scan and the array; a store that cannot be opened raises ``StoreError``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import os
import stat
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calpipe.errors import (
    CalibrationError,
    L0FormatError,
    MetadataError,
    MissingLoadError,
    StoreError,
)
from calpipe.physics.reference import CHOP_MODES
from calpipe.schema import SCAN_GROUP, parse_scan_group, scan_group_name  # noqa: F401

if TYPE_CHECKING:
    from calpipe.config import CalibrationConfig

log = logging.getLogger(__name__)

FILL_VALUE = np.iinfo(np.int32).min
# BEAM1 / BEAM2: the two halves of a beam-switched Nod pair (issue 16, GBT PROCSCAN); the
# scan attribute ``nod_beams`` names the two receivers. VANE: a chopper-wheel (ambient
# absorber) subscan, calibrated with a SKY subscan (calpipe.physics.chopper).
# SWA-ON ... OTFSWB-OFF (and the bare SWA / SWB, refused with a clear message by the prepare
# stage): the chop phases of an OTF-chopped / dual-beam-switch scan (issue 14)
SOURCE_MODES = ("ON", "OFF", "OTF-ON", "OTF-OFF", "BEAM1", "BEAM2", *CHOP_MODES)
CALIBRATION_MODES = ("HOT", "COLD", "COL", "SKY", "ZERO", "VANE")
FLOAT_DATA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLOAT_COUNTS_ATTR = "float_counts"  # data_5d attribute that declares the float variant

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
#: the arrays whose values must agree between a scan and the loads that calibrate it
TUNING_ARRAYS = ("signal_freq", "image_freq", "freq_res", "freq_off", "ref_channel")
METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
GIB = 1 << 30


@dataclass(frozen=True)
class ReadLimits:
    """Bounds the reader enforces before it allocates or opens anything (issue 12).

    ``max_scan_bytes``: in-memory size (float64) of one ``data_5d`` (source or calibration)
    and of any single array or chunk. ``max_chunks``: chunks per array (a huge declared shape
    cut into tiny chunks would take hours to read). ``min_elevation_rad``: smallest accepted
    source elevation (the plane-parallel airmass 1 / sin(el) is meaningless near 0).
    The defaults are those of ``CalibrationConfig`` (``max_scan_gib``, ``max_chunks_per_array``,
    ``min_elevation_deg``); ``from_config`` takes a configuration's values.
    """

    max_scan_bytes: int = 8 * GIB
    max_chunks: int = 1_000_000
    min_elevation_rad: float = math.radians(5.0)

    @classmethod
    def from_config(cls, config: CalibrationConfig) -> ReadLimits:
        return cls(max_scan_bytes=int(config.max_scan_gib * GIB),
                   max_chunks=int(config.max_chunks_per_array),
                   min_elevation_rad=math.radians(config.min_elevation_deg))


@dataclass(frozen=True)
class InvalidGroup:
    """A directory that looks like a scan, ``source/`` or ``calibration/`` group but is not a
    readable zarr group (no metadata file, a metadata file that is not a regular file, ...).
    ``Session.invalid_groups()`` lists them so that a run can report them."""

    path: str  # relative to the store, e.g. "scan_001002" or "scan_001002/calibration"
    scan: int | None
    reason: str


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
    #: names of the SUBSCAN_ARRAYS read from the store (the others are the defaults, zeros)
    stored: frozenset[str] = frozenset()

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
    #: sha1 of the subscan metadata and attributes (see ``content_digest``)
    meta_digest: str = ""
    #: per read subscan: sha1 of its raw int32 counts, and its number of non-fill samples
    subscan_digests: Mapping[int, str] = field(default_factory=dict)
    subscan_valid: Mapping[int, int] = field(default_factory=dict)
    #: decoded bytes of L0 arrays this read took (metadata and the selected counts)
    bytes_read: int = 0

    @property
    def read_subscans(self) -> tuple[int, ...]:
        """The subscans whose counts were read (the others are unset memory, never used)."""
        return tuple(sorted(self.subscan_digests))

    @property
    def content_digest(self) -> str:
        """sha1 over the metadata and every subscan's raw counts ('' after a partial read)."""
        if len(self.subscan_digests) != self.counts.shape[4]:
            return ""
        return combine_digests(self.meta_digest, self.subscan_digests)

    def require_subscans(self, index: np.ndarray, stage: str) -> None:
        """A stage that uses subscans ``index`` checks that they were read (a wiring bug)."""
        missing = sorted(set(np.asarray(index).tolist()) - set(self.subscan_digests))
        if missing:
            raise RuntimeError(f"scan {self.scan}: stage {stage} needs subscans {missing}, "
                               "which were not read")
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
    bytes_read: int = 0

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes)


SubscanSelection = Sequence[int] | Callable[["SubscanMetadata"], Sequence[int]] | None


@dataclass
class Session:
    """An opened L0 session store. Open once, then load scans from it."""

    path: Path
    root: Any  # zarr.Group
    zarr_format: int
    _scan_groups: dict[int, str] = field(default_factory=dict)
    ignored_groups: list[str] = field(default_factory=list)
    limits: ReadLimits = field(default_factory=ReadLimits)
    _invalid: dict[str, InvalidGroup] = field(default_factory=dict)

    def scans(self) -> list[int]:
        """All scan numbers in the store, ascending (calibration-only scans included; a scan
        directory that is not a valid group is included too, see ``invalid_groups``)."""
        return sorted(self._scan_groups)

    def source_scans(self) -> list[int]:
        """Scans with a ``source/`` group: the ones to calibrate. A scan whose group cannot be
        opened is listed too, so that it fails (and is recorded) on its own; so is a scan
        directory without group metadata that holds a ``source/`` directory."""
        found = []
        for n in self.scans():
            name = self._scan_groups[n]
            if name in self._invalid:  # no readable group: its directories tell
                if os.path.lexists(self.path / name / "source"):
                    found.append(n)
                continue
            try:
                if self.has_source(n):
                    found.append(n)
            except CalibrationError:
                found.append(n)
        return found

    def invalid_groups(self) -> list[InvalidGroup]:
        """Scan-like directories (``scan_`` + digits at the root, ``source/`` and
        ``calibration/`` inside a scan) that are not valid zarr groups, e.g. whose
        ``zarr.json`` (v2: ``.zgroup``) is missing. Never silently skipped: a scan with such a
        directory fails when loaded, and a run can report this list as well."""
        found = dict(self._invalid)
        for number, name in self._scan_groups.items():
            gdir = self.path / name
            for sub in ("source", "calibration"):
                reason = _group_dir_problem(gdir / sub, self.path)
                if reason is not None:
                    key = f"{name}/{sub}"
                    found.setdefault(key, InvalidGroup(key, number, reason))
        return [found[k] for k in sorted(found)]

    def has_source(self, scan: int) -> bool:
        return _has_member(self._group(scan), "source", scan, "", self.path)

    def has_calibration(self, scan: int) -> bool:
        return _has_member(self._group(scan), "calibration", scan, "", self.path)

    def attrs(self, scan: int) -> dict[str, Any]:
        return dict(self._group(scan).attrs)

    def _group(self, scan: int) -> Any:
        try:
            name = self._scan_groups[scan]
        except KeyError:
            raise MissingLoadError("no such scan group in the store", scan=scan) from None
        invalid = self._invalid.get(name)
        if invalid is not None:
            raise L0FormatError(f"group {name} is not readable: {invalid.reason}", scan=scan,
                                array=f"{name}/")
        problem = _group_dir_problem(self.path / name, self.path)
        if problem is not None:
            raise L0FormatError(f"group {name} is not readable: {problem}", scan=scan,
                                array=f"{name}/")
        import zarr

        try:
            group = self.root[name]
        except Exception as exc:  # zarr raises several types for damaged metadata
            raise L0FormatError(f"cannot open group {name}: {exc}", scan=scan) from exc
        if not isinstance(group, zarr.Group):
            raise L0FormatError(f"{name} is an array, expected a scan group", scan=scan,
                                array=f"{name}/")
        return group

    def _reader(self, scan: int, where: str) -> _Reader:
        return _Reader(scan, where, self.limits, self.path)

    # -- loading --------------------------------------------------------------------------
    def load_scan(self, scan: int, subscans: SubscanSelection = None) -> ScanData:
        """Read and validate the source group of ``scan``.

        ``subscans``: which subscans' counts to read - all (None), a sequence of indices, or a
        function of the validated metadata returning them (a Snakemake job reads only what
        its stage needs). The metadata are always read in full.
        """
        group = self._group(scan)
        if not _has_member(group, "source", scan, "", self.path):
            raise L0FormatError("scan has no source/ group (calibration-only)", scan=scan)
        src = _subgroup(group, "source", scan, self.path)
        rd = self._reader(scan, "source")
        arr = rd.open_counts(src)
        c, d, r, a, s = arr.shape
        meta = rd.metadata(src, s, SOURCE_MODES)
        if meta.lloadsn is None and not _has_member(group, "calibration", scan, "", self.path):
            raise L0FormatError(
                "missing array (needed: no calibration/ group in this scan)",
                scan=scan,
                array="source/lloadsn",
            )
        otf_lon = rd.otf(src, "otf_lon", d, s)
        otf_lat = rd.otf(src, "otf_lat", d, s)
        pix_lon = rd.pixel_offset(src, "pixel_offset_lon", r, a, s)
        pix_lat = rd.pixel_offset(src, "pixel_offset_lat", r, a, s)
        fb = rd.strings(src, "frontend_backends", s, required=False)
        if fb is None:
            fb = np.array([""] * s)
        if subscans is None:
            select = list(range(s))
        else:
            chosen = subscans(meta) if callable(subscans) else subscans
            select = sorted({int(k) for k in np.asarray(chosen, dtype=np.int64).tolist()})
        counts, digests, valid = rd.read_counts(arr, select)
        meta_digest = _content_hash()
        _digest_metadata(meta_digest, meta)
        attrs = dict(group.attrs)
        meta_digest.update(_json_digest_text(attrs).encode())
        gains = rd.sideband_gains(src, c, r, a)  # issue 13: per-channel sideband gains
        if gains is not None:
            for g in gains:
                meta_digest.update(np.ascontiguousarray(g, dtype="<f8").tobytes())
        data = ScanData(
            scan=scan,
            attrs=attrs,
            counts=counts,
            meta=meta,
            otf_lon=otf_lon,
            otf_lat=otf_lat,
            pixel_offset_lon=pix_lon,
            pixel_offset_lat=pix_lat,
            frontend_backends=fb,
            has_own_calibration=_has_member(group, "calibration", scan, "", self.path),
            meta_digest=meta_digest.hexdigest(),
            subscan_digests=digests,
            subscan_valid=valid,
            bytes_read=rd.stats["bytes"],
            sideband_gains=gains,
        )
        return data

    def next_calibration_scan(self, scan: int, cal_scan: int) -> int:
        """The first scan after both ``scan`` and its calibration scan that has a
        ``calibration/`` group (issue 14: gain interpolation); MissingLoadError if none."""
        for n in self.scans():
            if n <= max(scan, cal_scan):
                continue
            try:
                if self.has_calibration(n):
                    return n
            except CalibrationError:
                continue
        raise MissingLoadError(f"gain_interpolate: no calibration snapshot after scan "
                               f"{max(scan, cal_scan)} in the store", scan=scan,
                               array="calibration")

    def calibration_scan_for(self, scan: int, lloadsn: np.ndarray | None = None) -> int:
        """Which scan's ``calibration/`` group serves ``scan`` (DESIGN 2.1)."""
        if self.has_calibration(scan):
            return scan
        if lloadsn is None:
            src = _subgroup(self._group(scan), "source", scan, self.path)
            rd = self._reader(scan, "source")
            lloadsn = rd.lloadsn(src, None)
            if lloadsn is None:
                raise L0FormatError("missing array (needed: no calibration/ group in this "
                                    "scan)", scan=scan, array="source/lloadsn")
        values = np.unique(_valid_lloadsn(np.asarray(lloadsn), scan, "source"))
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
        try:
            has_cal = self.has_calibration(target)
        except CalibrationError as exc:
            raise MissingLoadError(f"lloadsn points to scan {target}, which is unreadable: "
                                   f"{exc.detail}", scan=scan, array="source/lloadsn") from exc
        if not has_cal:
            raise MissingLoadError(
                f"lloadsn points to scan {target}, which has no calibration/ group",
                scan=scan,
                array="source/lloadsn",
            )
        return target

    def load_calibration(self, scan: int, lloadsn: np.ndarray | None = None) -> CalibrationSnapshot:
        """The HOT/COLD snapshot for science scan ``scan``."""
        cal_scan = self.calibration_scan_for(scan, lloadsn)
        where = "calibration" if cal_scan == scan else f"calibration (of scan {cal_scan})"
        group = _subgroup(self._group(cal_scan), "calibration", scan, self.path, label=where)
        rd = self._reader(scan, where)
        arr = rd.open_counts(group)
        s = arr.shape[4]
        meta = rd.metadata(group, s, CALIBRATION_MODES, full=False)
        thot = rd.numeric(group, "thot", s, "float64")
        tcold = rd.numeric(group, "tcold", s, "float64")
        counts, digests, valid = rd.read_counts(arr, list(range(s)))
        check_has_data(scan, valid, range(s), where)
        meta_digest = _content_hash()
        _digest_metadata(meta_digest, meta)
        meta_digest.update(thot.tobytes() + tcold.tobytes())
        return CalibrationSnapshot(
            scan=cal_scan, for_scan=scan, counts=counts, meta=meta, thot=thot, tcold=tcold,
            content_digest=combine_digests(meta_digest.hexdigest(), digests),
            bytes_read=rd.stats["bytes"],
        )


def open_session(path: str | Path, limits: ReadLimits | None = None) -> Session:
    """Open an L0 session store (Zarr v3 or v2) read-only and index its scan groups.

    ``limits`` bounds what a scan may declare (``ReadLimits.from_config(config)``; default:
    the ``CalibrationConfig`` defaults)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise StoreError(f"L0 store {path} does not exist")
    if not path.is_dir():
        raise StoreError(f"L0 store {path} is not a directory")
    problem = _metadata_files_problem(path, path)
    if problem is not None:
        raise StoreError(f"cannot open L0 store {path}: {problem}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # any zarr/JSON failure at the root is fatal
        raise StoreError(f"cannot open L0 store {path}: {exc}") from exc
    # Issue 6: list the children from the directory, not with ``root.members()``, which opens
    # and parses every child's metadata - one scan group with a 50 MB attribute (or a campaign
    # of thousands of scans) then cost every open, i.e. every Snakemake job. A child is a node
    # when it holds a metadata file; a damaged one is listed and fails on its own when read.
    # Issue 12: a scan-like directory (scan_ + digits) that is not a valid group (no metadata
    # file, a metadata file that is a FIFO, a link out of the store) is no longer skipped in
    # silence: it is listed as a scan, fails when read, and is in ``invalid_groups()``.
    session = Session(path=path, root=root, zarr_format=int(root.metadata.zarr_format),
                      limits=limits or ReadLimits())
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise StoreError(f"cannot list L0 store {path}: {exc}") from exc
    invalid: list[tuple[int, str, str]] = []
    for entry in entries:
        name = entry.name
        try:
            is_dir = entry.is_dir()  # follows a symlink; containment is checked below
        except OSError:
            is_dir = False
        if not is_dir:
            continue
        number = parse_scan_group(name)
        problem = _group_dir_problem(path / name, path)
        if problem is not None:
            if number is not None:
                invalid.append((number, name, problem))
            continue  # a plain directory with another name is not a zarr node
        if number is None:
            session.ignored_groups.append(name)
            log.warning("L0 store %s: ignoring group %r (not scan_ + digits)", path, name)
            continue
        if number in session._scan_groups:
            raise StoreError(f"L0 store {path}: two groups for scan {number}")
        session._scan_groups[number] = name
    for number, name, problem in invalid:
        log.warning("L0 store %s: %s is not a valid group (%s)", path, name, problem)
        session._invalid[name] = InvalidGroup(name, number, problem)
        # listed (so the scan fails and is recorded) unless a valid group has that number
        session._scan_groups.setdefault(number, name)
    return session


def iter_scan_groups(root: Any) -> Iterator[tuple[int, str]]:
    for name in sorted(_member_names(root)):
        number = parse_scan_group(name)
        if number is not None:
            yield number, name


# -- filesystem checks (before zarr opens anything) ---------------------------------------------

def _fs_dir(node: Any) -> Path | None:
    """The directory of a zarr node in a local store, else None (no file checks)."""
    store = getattr(node, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        return None
    return Path(root) / node.path if node.path else Path(root)


@functools.lru_cache(maxsize=64)
def _real_root(absolute_root: str) -> str:
    """realpath of an absolute store path (cached: called for every chunk file)."""
    return os.path.realpath(absolute_root)


def _inside(real: str, root: Path) -> bool:
    # the cache key is absolute: a relative store path means another directory after a
    # chdir (a long-lived process, the test suite), and must not reuse a stale answer
    base = _real_root(os.path.abspath(root))
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "of an unknown file type"


def _entry_problem(path: Path, store_root: Path, *, want_dir: bool) -> str | None:
    """Why ``path`` may not be opened: a link resolving out of the store, or not a regular
    file (``want_dir``: not a directory). None when fine or absent. Never opens ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path.name}: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(path)
        if not _inside(real, store_root):
            return f"{path.name} is a symbolic link to {real}, outside the store"
        try:
            st = os.stat(real)
        except OSError as exc:
            return f"{path.name}: dangling symbolic link ({exc.strerror or exc})"
    ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    if not ok:
        return f"{path.name} is {_kind(st.st_mode)}, expected " + (
            "a directory" if want_dir else "a regular file")
    return None


def _metadata_files_problem(node_dir: Path, store_root: Path) -> str | None:
    """A metadata file of a node that is not a regular file inside the store."""
    for meta in METADATA_FILES:
        problem = _entry_problem(node_dir / meta, store_root, want_dir=False)
        if problem is not None:
            return problem
    return None


def _group_dir_problem(gdir: Path, store_root: Path) -> str | None:
    """Why the directory ``gdir`` is not a valid zarr group; None when it is, or is absent."""
    try:
        os.lstat(gdir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{exc.strerror or exc}"
    problem = _entry_problem(gdir, store_root, want_dir=True)
    if problem is not None:
        return problem
    problem = _metadata_files_problem(gdir, store_root)
    if problem is not None:
        return problem
    if not any((gdir / meta).is_file() for meta in ("zarr.json", ".zgroup", ".zarray")):
        return "no zarr metadata file (zarr.json, or .zgroup for Zarr v2)"
    return None


def _member_names(group: Any) -> set[str]:
    return {name for name, _ in group.members()}


def _has_member(group: Any, name: str, scan: int, where: str, store_root: Path,
                gdir: Path | None = None) -> bool:
    """Whether ``group`` has a child ``name``. In a local store this is decided from the
    directory alone (no zarr metadata is parsed; ``members()`` would parse every sibling, so
    one corrupt zarr.json would break every lookup): a child directory with a metadata file is
    present, even if that file is unreadable (the read that follows reports it with scan and
    array). A directory ``name`` without zarr metadata (or with metadata that is not a regular
    file inside the store) is an ``L0FormatError``, never "absent": an optional array or a
    ``calibration/`` group whose zarr.json was lost must not silently become zeros or the
    loads of another scan. Other stores: opening the child decides.
    """
    gdir = gdir if gdir is not None else _fs_dir(group)
    label = f"{where}/{name}" if where else f"{name}/"
    if gdir is not None:
        child = gdir / name
        problem = _group_dir_problem(child, store_root)
        if problem is not None:
            raise L0FormatError(f"not a readable zarr node: {problem}", scan=scan, array=label)
        return os.path.lexists(child)
    try:
        group[name]
    except KeyError:
        return False
    except Exception:
        return True
    return True


def _subgroup(group: Any, name: str, scan: int, store_root: Path, label: str = "") -> Any:
    label = label or name
    gdir = _fs_dir(group)
    if gdir is not None:
        problem = _group_dir_problem(gdir / name, store_root)
        if problem is not None:
            raise L0FormatError(f"not a readable group: {problem}", scan=scan, array=f"{label}/")
    try:
        sub = group[name]
    except KeyError:
        raise L0FormatError("group missing", scan=scan, array=f"{label}/") from None
    except Exception as exc:
        raise L0FormatError(f"unreadable group: {exc}", scan=scan, array=f"{label}/") from exc
    import zarr

    if not isinstance(sub, zarr.Group):
        raise L0FormatError("expected a group, found an array", scan=scan, array=f"{label}/")
    return sub


# -- chunk files ------------------------------------------------------------------------------

def _outer_blosc(arr: Any) -> bool:
    """Whether every chunk file of ``arr`` is one blosc frame (v2 compressor blosc; v3 with
    blosc as the last bytes-to-bytes codec and no sharding)."""
    meta = arr.metadata
    if getattr(meta, "zarr_format", 3) == 2:
        comp = getattr(meta, "compressor", None)
        return getattr(comp, "codec_id", None) == "blosc"
    codecs = list(getattr(meta, "codecs", ()))
    if not codecs:
        return False
    last = codecs[-1]
    name = type(last).__name__.lower()
    return "blosc" in name or getattr(last, "codec_name", "").endswith("blosc")


def _check_blosc_frame(fd: int, size: int, key: str, expected_nbytes: int | None) -> str | None:
    """A blosc frame's 16-byte header against the file: c-blosc trusts the header's
    compressed size (cbytes) and reads that many bytes from the buffer it is given, so a
    truncated frame is decoded from whatever memory follows the buffer (issue 12: a
    half-truncated Zarr v2 chunk decoded to garbage, intermittently)."""
    head = os.pread(fd, 16, 0)
    if len(head) < 16:
        return f"chunk {key}: {size} bytes, shorter than the 16-byte blosc header (truncated)"
    nbytes, _blocksize, cbytes = struct.unpack("<III", head[4:16])
    if cbytes != size:
        return (f"chunk {key}: blosc header says {cbytes} compressed bytes, the file has {size} "
                "(truncated or corrupt)")
    if expected_nbytes is not None and nbytes != expected_nbytes:
        return (f"chunk {key}: blosc header says {nbytes} decoded bytes, the chunk holds "
                f"{expected_nbytes} (corrupt)")
    return None


def _check_chunk_files(arr: Any, grid: tuple[int, ...], scan: int, label: str,
                       store_root: Path) -> None:
    """Every chunk file zarr will open for ``arr``: a regular file inside the store (a FIFO
    would block the read forever, a device or a link out of the store would feed foreign
    bytes into L1), and for blosc chunks a header that matches the file size. Absent chunk
    files are left to the caller (they read as the fill value). Nothing is opened that is not
    a regular file; a regular file is opened non-blocking and checked again."""
    adir = _fs_dir(arr)
    if adir is None:
        return
    meta = arr.metadata
    blosc = _outer_blosc(arr)
    expected: int | None = None
    if blosc and getattr(meta, "zarr_format", 3) == 2 and not getattr(meta, "filters", None):
        itemsize = np.dtype(arr.dtype).itemsize if np.dtype(arr.dtype).kind in "iufb" else 0
        expected = int(np.prod(arr.chunks)) * itemsize if itemsize else None
    parents: dict[str, str | None] = {}
    for coords in itertools.product(*(range(n) for n in grid)):
        key = meta.encode_chunk_key(coords)
        path = os.path.join(adir, key)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise L0FormatError(f"chunk {key}: {exc.strerror or exc}", scan=scan,
                                array=label) from exc
        parent = os.path.dirname(path)
        if parent not in parents:
            real_parent = os.path.realpath(parent)
            parents[parent] = None if _inside(real_parent, store_root) else real_parent
        if parents[parent] is not None:
            raise L0FormatError(f"chunk {key}: its directory resolves to {parents[parent]}, "
                                "outside the store", scan=scan, array=label)
        real = path
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path)
            if not _inside(real, store_root):
                raise L0FormatError(f"chunk {key} is a symbolic link to {real}, outside the "
                                    "store", scan=scan, array=label)
            try:
                st = os.stat(real)
            except OSError as exc:
                raise L0FormatError(f"chunk {key}: dangling symbolic link", scan=scan,
                                    array=label) from exc
        if not stat.S_ISREG(st.st_mode):
            raise L0FormatError(f"chunk {key} is {_kind(st.st_mode)}, not a regular file",
                                scan=scan, array=label)
        if not blosc:
            continue
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise L0FormatError(f"chunk {key}: {exc.strerror or exc}", scan=scan,
                                array=label) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                problem: str | None = f"chunk {key} is {_kind(st.st_mode)}, not a regular file"
            else:
                problem = _check_blosc_frame(fd, st.st_size, key, expected)
        finally:
            os.close(fd)
        if problem is not None:
            raise L0FormatError(problem, scan=scan, array=label)


# -- content digest ---------------------------------------------------------------------------

def check_has_data(scan: int, valid: Mapping[int, int], subscans: Sequence[int],
                   where: str = "source", what: str = "") -> None:
    """Issue 6: all-fill counts are "no data", whatever the configuration (with a fixed pwv
    they would otherwise become an all-NaN L1 group reported as calibrated). Checked by the
    stage that uses those subscans, so both orchestration modes fail a scan in one place."""
    if sum(valid.get(int(k), 0) for k in subscans) == 0:
        raise L0FormatError(f"every {what}sample is the int32 fill value ({FILL_VALUE}): "
                            "no data", scan=scan, array=f"{where}/data_5d")


def combine_digests(meta_digest: str, subscan_digests: Mapping[int, str]) -> str:
    """The content digest of a group: sha1 over its metadata digest and, in subscan order,
    the digests of its subscans' raw counts (the same whether one process read them all or
    several jobs each read some)."""
    h = _content_hash(meta_digest.encode())
    for s in sorted(subscan_digests):
        h.update(f"{s}:{subscan_digests[s]}".encode())
    return h.hexdigest()


def _json_digest_text(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _content_hash(data: bytes = b"") -> Any:
    """The hash behind content digests: sha1 (identification, not security; 2-7x faster
    than blake2b/sha256 here, and it runs over every raw byte)."""
    return hashlib.sha1(data, usedforsecurity=False)


def _digest_metadata(digest: Any, meta: SubscanMetadata) -> None:
    for f in dataclasses.fields(meta):
        value = getattr(meta, f.name)
        if isinstance(value, np.ndarray):
            digest.update(f.name.encode() + np.ascontiguousarray(value).astype(str).tobytes()
                          if value.dtype.kind in "OUT" else f.name.encode() + value.tobytes())


# -- validated array access ---------------------------------------------------------------------

NUMERIC_KINDS = "iuf"  # bool and complex are not numbers here


def _valid_lloadsn(values: np.ndarray, scan: int, where: str) -> np.ndarray:
    """lloadsn as int64: numeric, finite, integral and a possible scan number."""
    label = f"{where}/lloadsn"
    if values.dtype.kind not in NUMERIC_KINDS:
        raise L0FormatError(f"expected a numeric dtype, got {values.dtype}", scan=scan,
                            array=label)
    f = values.astype(np.float64)
    bad = ~np.isfinite(f) | (f != np.round(f)) | (f < 0) | (f > 999_999_999)
    if np.any(bad):
        raise MetadataError(f"not a scan number in subscan(s) {np.flatnonzero(bad).tolist()} "
                            f"({values[bad][:5].tolist()})", scan=scan, array=label)
    return f.astype(np.int64)


def _is_float_counts(arr: Any) -> bool:
    """data_5d in the declared float variant (issue 16)?"""
    try:
        return bool(np.dtype(arr.dtype) in FLOAT_DATA_DTYPES
                    and arr.attrs.get(FLOAT_COUNTS_ATTR) is True)
    except Exception:
        return False


@dataclass(frozen=True)
class _Reader:
    """Reads the arrays of one group for one scan, validating declared metadata (shape,
    chunks, dtype, chunk files) before any data is read or memory allocated."""

    scan: int
    where: str
    limits: ReadLimits
    store_root: Path
    #: decoded bytes of every array read through this reader (bytes-read accounting)
    stats: dict[str, int] = field(default_factory=lambda: {"bytes": 0})

    def label(self, name: str) -> str:
        return f"{self.where}/{name}"

    def error(self, name: str, message: str) -> L0FormatError:
        return L0FormatError(message, scan=self.scan, array=self.label(name))

    def present(self, group: Any, name: str) -> bool:
        return _has_member(group, name, self.scan, self.where, self.store_root)

    def open(self, group: Any, name: str, *, kinds: str | None = None,
             shapes: tuple[tuple[int, ...], ...] | None = None, ndim: int | None = None,
             describe: str = "") -> Any:
        """The zarr array ``name`` after checking its declared metadata: dtype kind in
        ``kinds``, shape in ``shapes`` (or ``ndim`` dimensions), positive chunk sizes, size
        and chunk count within the limits, and chunk files (``_check_chunk_files``)."""
        import zarr

        adir = _fs_dir(group)
        if adir is not None:
            problem = _group_dir_problem(adir / name, self.store_root)
            if problem is not None:
                raise self.error(name, f"not a readable array: {problem}")
        try:
            arr = group[name]
        except KeyError:
            raise self.error(name, "missing array") from None
        except Exception as exc:
            raise self.error(name, f"unreadable array metadata: {exc}") from exc
        if not isinstance(arr, zarr.Array):
            raise self.error(name, "expected an array, found a group")
        try:
            shape = tuple(int(n) for n in arr.shape)
            chunks = tuple(int(n) for n in arr.chunks)
            shards = arr.shards
            dtype = np.dtype(arr.dtype)
        except Exception as exc:  # a dtype numpy cannot represent, an irregular grid, ...
            raise self.error(name, f"unsupported array metadata: {type(exc).__name__}: "
                                   f"{exc}") from exc
        if kinds is not None and dtype.kind not in kinds:
            what = "strings" if "U" in kinds else "a numeric dtype"
            raise self.error(name, f"expected {what}, got {arr.dtype}")
        if ndim is not None and len(shape) != ndim:
            raise self.error(name, f"expected {ndim} dimensions {describe}, got shape {shape}")
        if shapes is not None and shape not in shapes:
            raise self.error(name, f"expected shape {' or '.join(map(str, shapes))} "
                                   f"{describe}, got {shape}")
        if len(chunks) != len(shape) or any(n <= 0 for n in chunks):
            raise self.error(name, f"invalid chunk shape {chunks} for shape {shape}")
        n_elem = math.prod(shape)
        itemsize = max(dtype.itemsize, 8)  # in memory: float64, or a str/object per element
        budget = self.limits.max_scan_bytes
        if n_elem * itemsize > budget or math.prod(chunks) * itemsize > budget:
            raise self.error(name, f"declared shape {shape} (chunks {chunks}) needs "
                                   f"{max(n_elem, math.prod(chunks)) * itemsize / GIB:.3g} GiB, "
                                   f"over the limit of {budget / GIB:.3g} GiB per array "
                                   "(option max_scan_gib)")
        outer = tuple(int(n) for n in shards) if shards else chunks
        grid = tuple(-(-s // c) for s, c in zip(shape, outer, strict=True))
        n_read = math.prod(-(-s // c) for s, c in zip(shape, chunks, strict=True))
        if n_read > self.limits.max_chunks:
            raise self.error(name, f"{n_read} chunks (shape {shape}, chunks {chunks}), over the "
                                   f"limit of {self.limits.max_chunks} per array (option "
                                   "max_chunks_per_array)")
        _check_chunk_files(arr, grid, self.scan, self.label(name), self.store_root)
        return arr

    def read(self, arr: Any, name: str, selection: Any = Ellipsis) -> np.ndarray:
        try:
            values = np.asarray(arr[selection])
        except Exception as exc:  # truncated / corrupt chunk, codec error
            raise self.error(name, f"cannot read data: {type(exc).__name__}: {exc}") from exc
        self.stats["bytes"] += int(values.nbytes)
        return values

    def open_counts(self, group: Any) -> Any:
        """The data_5d array, its declared shape, dtype and chunk files checked (no read)."""
        name = "data_5d"
        arr = self.open(group, name, ndim=5, describe="[C, D, R, A, S]")
        dtype = np.dtype(arr.dtype)
        # issue 16: the float variant - float32 / float64 data_5d declared by the array
        # attribute ``float_counts: true`` (imported data that int32 cannot hold exactly, e.g.
        # GBT SDFITS float32 spectra); NaN is its fill value. An undeclared float array stays
        # an error.
        is_float = _is_float_counts(arr)
        if dtype != np.int32 and not is_float:
            hint = (f" (float32/float64 need the array attribute {FLOAT_COUNTS_ATTR}: true)"
                    if dtype in FLOAT_DATA_DTYPES else "")
            raise self.error(name, f"expected dtype int32, got {arr.dtype}{hint}")
        if min(arr.shape) == 0:
            raise self.error(name, f"empty array, shape {arr.shape}")
        # zarr silently reads an absent chunk as the array's fill_value: unless that is the
        # int32 fill (absent = no data -> NaN), a deleted chunk file would become fake counts.
        try:
            fill_value, n_init, n_all = arr.fill_value, arr.nchunks_initialized, arr.nchunks
        except Exception as exc:
            raise self.error(name, f"unreadable array metadata: {exc}") from exc
        fill_is_nodata = bool(np.isnan(fill_value)) if is_float else fill_value == FILL_VALUE
        if not fill_is_nodata and n_init < n_all:
            nodata = "NaN" if is_float else "the int32 fill"
            raise self.error(name, f"{n_all - n_init} of {n_all} chunk file(s) missing "
                                   f"(fill_value {fill_value} is not {nodata})")
        return arr

    def read_counts(self, arr: Any, select: Sequence[int]
                    ) -> tuple[np.ndarray, dict[int, str], dict[int, int]]:
        """data_5d [C, D, R, A, S] int32 -> float64, fill -> NaN, the ``select``ed subscans.

        Returns the counts (full shape; subscans not selected are left unset and untouched,
        so a partial read costs neither I/O nor memory for them), the sha1 of every read
        subscan's raw int32 bytes and its number of non-fill samples.
        """
        name = "data_5d"
        # subscan-major memory: out[..., s] is one contiguous block (CCAT keeps a Vec of
        # [C, D, R, A] arrays for the same reason), while the public shape stays [C, D, R, A, S]
        c, d, r, a, n_s = arr.shape
        bad = [k for k in select if not 0 <= k < n_s]
        if bad:
            raise self.error(name, f"subscan(s) {bad} out of range (S = {n_s})")
        is_float = _is_float_counts(arr)
        want = np.dtype(arr.dtype) if is_float else np.dtype(np.int32)
        out = np.empty((n_s, c, d, r, a), dtype=np.float64).transpose(1, 2, 3, 4, 0)
        digests: dict[int, str] = {}
        valid: dict[int, int] = {}
        for s in select:
            raw = self.read(arr, name, (..., s))
            if raw.shape != (c, d, r, a) or raw.dtype != want:
                raise self.error(name, f"subscan {s} decoded to {raw.dtype}{raw.shape}, "
                                       f"expected {want}{(c, d, r, a)}")
            digests[s] = _content_hash(np.ascontiguousarray(raw).tobytes()).hexdigest()
            np.copyto(out[..., s], raw, casting="unsafe")
            fill = np.isnan(raw) if is_float else raw == FILL_VALUE
            n_fill = int(np.count_nonzero(fill))
            if n_fill:  # the scatter costs a pass over the mask: only when there is fill
                out[..., s][fill] = np.nan
            valid[s] = fill.size - n_fill
        return out, digests, valid

    def strings(self, group: Any, name: str, n: int, *, required: bool) -> np.ndarray | None:
        if not self.present(group, name):
            if required:
                raise self.error(name, "missing array")
            return None
        arr = self.open(group, name, kinds="OUTS", shapes=((n,),),
                        describe=f"[S] (data_5d has S = {n} subscans)")
        values = self.read(arr, name)
        if values.shape != (n,):
            raise self.error(name, f"decoded to shape {values.shape}, expected ({n},)")
        if values.dtype.kind == "S":
            try:
                return np.array([v.decode() for v in values.tolist()])
            except UnicodeDecodeError as exc:
                raise self.error(name, f"not UTF-8 text: {exc}") from exc
        items = values.tolist()
        if not all(isinstance(v, str) for v in items):
            bad = next(v for v in items if not isinstance(v, str))
            raise self.error(name, f"expected strings, found a {type(bad).__name__}")
        return np.array([str(v) for v in items])

    def numeric(self, group: Any, name: str, n: int, dtype: str, *,
                required: bool = True) -> np.ndarray:
        if not self.present(group, name):
            if required:
                raise self.error(name, "missing array")
            return np.zeros(n, dtype=dtype)
        return self._numeric(group, name, ((n,),), f"[S] (data_5d has S = {n} subscans)"
                             ).astype(dtype)

    def _numeric(self, group: Any, name: str, shapes: tuple[tuple[int, ...], ...],
                 describe: str) -> np.ndarray:
        arr = self.open(group, name, kinds=NUMERIC_KINDS, shapes=shapes, describe=describe)
        values = self.read(arr, name)
        if values.dtype.kind not in NUMERIC_KINDS or values.shape not in shapes:
            raise self.error(name, f"decoded to {values.dtype}{values.shape}")
        return values

    def sideband_gains(self, group: Any, c: int, r: int, a: int
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """Optional gs_xs and gi_xi (both or neither), [C] or [C, R, A], finite, >= 0, with
        gs_xs > 0 (issue 13: per-channel sideband gains)."""
        have = [self.present(group, n) for n in ("gs_xs", "gi_xi")]
        if not any(have):
            return None
        if not all(have):
            raise self.error("gi_xi" if have[0] else "gs_xs",
                             "per-channel sideband gains need both gs_xs and gi_xi")
        shapes = ((c,), (c, r, a))
        out = []
        for name in ("gs_xs", "gi_xi"):
            values = self._numeric(group, name, shapes,
                                   f"[C] or [C, R, A] (data_5d has {(c, r, a)})")
            values = values.astype(np.float64)
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise MetadataError("sideband gains must be finite and >= 0", scan=self.scan,
                                    array=self.label(name))
            out.append(values)
        if out[0].shape != out[1].shape:
            raise self.error("gi_xi", f"gs_xs {out[0].shape} and gi_xi {out[1].shape} differ "
                                      "in shape")
        if np.any(out[0] <= 0):
            raise MetadataError("gs_xs must be > 0 in every channel", scan=self.scan,
                                array=self.label("gs_xs"))
        return out[0], out[1]

    def lloadsn(self, group: Any, n: int | None) -> np.ndarray | None:
        if not self.present(group, "lloadsn"):
            return None
        if n is None:
            arr = self.open(group, "lloadsn", kinds=NUMERIC_KINDS, ndim=1, describe="[S]")
            values = self.read(arr, "lloadsn")
        else:
            values = self._numeric(group, "lloadsn", ((n,),),
                                   f"[S] (data_5d has S = {n} subscans)")
        return _valid_lloadsn(values, self.scan, self.where)

    def metadata(self, group: Any, n: int, modes: tuple[str, ...], *,
                 full: bool = True) -> SubscanMetadata:
        """The [S] arrays; ``full``: the source group (frequencies required, ranges checked)."""
        sobsmode = self.strings(group, "sobsmode", n, required=True)
        assert sobsmode is not None
        norm = np.char.upper(np.char.strip(sobsmode))
        unknown = sorted(set(norm.tolist()) - set(modes))
        if unknown:
            raise MetadataError(f"unknown sobsmode value(s) {unknown}; expected one of "
                                f"{list(modes)}", scan=self.scan, array=self.label("sobsmode"))
        values: dict[str, np.ndarray] = {}
        stored = set()
        for name, (required, dtype) in SUBSCAN_ARRAYS.items():
            if name == "lloadsn":
                continue
            needed = required and (full or name in ("mjd", "exptime"))
            if self.present(group, name):
                stored.add(name)
                values[name] = self._numeric(group, name, ((n,),), f"[S] (data_5d has S = "
                                             f"{n} subscans)").astype(dtype)
            elif needed:
                raise self.error(name, "missing array")
            else:
                values[name] = np.zeros(n, dtype=dtype)
        lloadsn = self.lloadsn(group, n)
        if lloadsn is not None:
            stored.add("lloadsn")
        _check_metadata(values, self.scan, self.where, full, self.limits)
        return SubscanMetadata(sobsmode=norm, lloadsn=lloadsn, stored=frozenset(stored),
                               **values)

    def otf(self, group: Any, name: str, d: int, s: int) -> np.ndarray:
        """otf_lon / otf_lat as [S] (broadcast over dumps) or [D, S]; absent -> zeros."""
        if not self.present(group, name):
            return np.zeros((d, s))
        values = self._numeric(group, name, ((s,), (d, s)), "[S] or [D, S]")
        _check_finite(values, self.scan, self.label(name))
        if values.shape == (s,):
            return np.broadcast_to(values.astype(np.float64), (d, s)).copy()
        return values.astype(np.float64)

    def pixel_offset(self, group: Any, name: str, r: int, a: int, s: int) -> np.ndarray:
        """pixel offsets as [R, A, S] or legacy [R, A] (broadcast over subscans); absent ->
        zeros."""
        if not self.present(group, name):
            return np.zeros((r, a, s))
        values = self._numeric(group, name, ((r, a, s), (r, a)), "[R, A, S] or [R, A]")
        _check_finite(values, self.scan, self.label(name))
        if values.shape == (r, a, s):
            return values.astype(np.float64)
        return np.repeat(values.astype(np.float64)[:, :, None], s, axis=2)


def _check_finite(values: np.ndarray, scan: int, label: str) -> None:
    bad = ~np.isfinite(values.astype(np.float64))
    if np.any(bad):
        where = np.argwhere(bad)[:5].tolist()
        raise MetadataError(f"non-finite value at index {where}", scan=scan, array=label)


def _check_metadata(v: dict[str, np.ndarray], scan: int, where: str, full: bool,
                    limits: ReadLimits) -> None:
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
    if np.any(el < limits.min_elevation_rad):
        low = np.flatnonzero(el < limits.min_elevation_rad).tolist()
        degs = ", ".join(f"{x:.3g}" for x in np.degrees(el[low]).tolist())
        raise bad("elevation", f"elevation [{degs}] deg in "
                  f"subscan(s) {low} is below the minimum of "
                  f"{math.degrees(limits.min_elevation_rad):g} deg (option min_elevation_deg)")
    if np.any(v["freq_res"] == 0):
        raise bad("freq_res", "channel width is zero")
    if np.any(v["signal_freq"] <= 0):
        raise bad("signal_freq", "sky frequency must be > 0 Hz")
    if np.any(v["image_freq"] <= 0):
        raise bad("image_freq", "sky frequency must be > 0 Hz")
    if np.any(v["tamb"] <= 0):
        raise bad("tamb", "ambient temperature must be > 0 K")
    if np.any(v["pamb"] <= 0):
        raise bad("pamb", "ambient pressure must be > 0 Torr")


def check_compatible(scan: ScanData, cal: CalibrationSnapshot) -> None:
    """The calibration snapshot must cover the same channels and pixels as the scan, with the
    same tuning (``check_same_tuning``)."""
    c, _, r, a, _ = scan.counts.shape
    cc, _, cr, ca, _ = cal.counts.shape
    if (c, r, a) != (cc, cr, ca):
        where = "calibration" if cal.scan == scan.scan else f"calibration of scan {cal.scan}"
        raise L0FormatError(
            f"calibration data_5d has [C, R, A] = {(cc, cr, ca)} but the source has {(c, r, a)}",
            scan=scan.scan, array=f"{where}/data_5d")
    check_same_tuning(scan, cal)


def check_same_tuning(scan: ScanData, cal: CalibrationSnapshot) -> None:
    """The loads must have been taken with the science scan's frequency set-up.

    For every HOT/COLD subscan whose ``calibration/`` group stores the tuning arrays
    (``TUNING_ARRAYS``; absent ones take the science scan's values), the sky frequency of every
    channel, nu(c) = signal_freq + freq_off + (c - ref_channel) freq_res (and the image
    sideband's), must agree with the science scan's within half a channel width. A different
    tuning calibrates every channel with the gain of another frequency: MetadataError.
    """
    stored = [n for n in TUNING_ARRAYS if n in cal.meta.stored]
    if not stored:
        return
    where = "calibration" if cal.scan == scan.scan else f"calibration (of scan {cal.scan})"
    n_c = scan.counts.shape[0]
    sm, cm = scan.meta, cal.meta
    sci = {n: float(getattr(sm, n)[0]) for n in TUNING_ARRAYS}
    nu_sig, nu_img = sm.frequency_axes(n_c)
    tol = 0.5 * abs(sci["freq_res"])
    used = np.flatnonzero(np.isin(cm.sobsmode, ("HOT", "COLD", "COL"))).tolist()
    for s in used:
        vals = {n: float(getattr(cm, n)[s]) if n in stored else sci[n] for n in TUNING_ARRAYS}
        ch = np.arange(n_c, dtype=np.float64) - vals["ref_channel"]
        c_sig = vals["signal_freq"] + vals["freq_off"] + ch * vals["freq_res"]
        c_img = vals["image_freq"] + vals["freq_off"] - ch * vals["freq_res"]
        worst = max(float(np.max(np.abs(c_sig - nu_sig))), float(np.max(np.abs(c_img - nu_img))))
        if not worst <= tol:
            differ = [n for n in stored if not math.isclose(vals[n], sci[n], rel_tol=1e-9,
                                                            abs_tol=1e-9)]
            name = differ[0] if differ else stored[0]
            detail = ", ".join(f"{n} {vals[n]:.10g} vs {sci[n]:.10g}" for n in differ)
            raise MetadataError(
                f"the loads were taken with another frequency set-up than the scan "
                f"(subscan {s} of the loads vs the scan: {detail}); channels differ by up to "
                f"{worst:.4g} Hz, more than half a channel ({tol:.4g} Hz)",
                scan=scan.scan, array=f"{where}/{name}")


__all__ = [
    "CalibrationError",
    "CalibrationSnapshot",
    "InvalidGroup",
    "ReadLimits",
    "ScanData",
    "Session",
    "SubscanMetadata",
    "check_compatible",
    "check_same_tuning",
    "open_session",
    "parse_scan_group",
    "scan_group_name",
]
