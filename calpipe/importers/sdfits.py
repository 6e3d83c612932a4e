"""GBT raw SDFITS (VEGAS rows) -> a calpipe L0 session in the CCAT layout (issue 16).

``import_sdfits(inputs, out)`` reads every ``SINGLE DISH`` binary table of the given files (or
of every ``*.fits`` in the given directories) and writes one L0 store:

- feeds (FDNUM) become receivers R, (IFNUM, PLNUM) pairs become arrays A, the integrations of
  a scan become dumps D; channels C are the DATA vector;
- a VANE scan (OBJECT ``VANE`` or CALPOSITION ``Vane``) and the SKY scan that follows it
  (scan + 1, OBJECT ``SKY``, dysh's pairing rule) become the ``calibration/`` group of a
  calibration-only scan group named after the VANE scan, subscans ``[VANE, SKY]``;
- the two scans of a Nod pair (PROCSEQN 1 and 2, PROCSIZE 2) become one science scan group
  named after the first, subscans ``[BEAM1, BEAM2]`` (from PROCSCAN); the scan attribute
  ``nod_beams`` holds the receiver indices of the two nodding beams (the feed centred on the
  target, FEEDXOFF = FEEDEOFF = 0, in the BEAM1 and in the BEAM2 scan, as dysh's
  ``get_nod_beams``); ``lloadsn`` points to the last VANE scan before the pair.

The DATA column is float32 and is stored as such (the L0 float variant, docs/l0-format.md):
int32 cannot hold it without loss (fractional values; spurs up to ~2e8). Every metadata array
comes from a column (table in docs/usage.md); a missing column is an ``ImportFormatError``
naming it. Nothing is interpolated or resampled. Other procedures are skipped with a warning
and listed in the root attribute ``skipped_scans``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calpipe.errors import ImportFormatError
from calpipe.l0 import FLOAT_COUNTS_ATTR, scan_group_name

log = logging.getLogger(__name__)

# Columns every imported row needs (an absent one is an ImportFormatError naming it).
REQUIRED_COLUMNS = (
    "SCAN", "OBJECT", "OBSMODE", "PROCSEQN", "PROCSIZE", "PROCSCAN", "CALPOSITION", "CAL",
    "FDNUM", "IFNUM", "PLNUM", "DATA", "DATE-OBS", "EXPOSURE", "DURATION", "CRVAL1", "CRPIX1",
    "CDELT1", "ELEVATIO", "AZIMUTH", "TAMBIENT", "PRESSURE", "TWARM", "RESTFREQ", "FEEDXOFF",
    "FEEDEOFF", "FRONTEND", "SIDEBAND",
)
# VEGAS spur description (dysh flags these channels); optional, written when present.
SPUR_COLUMNS = ("VSPRVAL", "VSPDELT", "VSPRPIX")
# TWARM below this is in degrees Celsius (Argus writes Celsius although TUNIT says K;
# dysh adds 273.15 for RcvrArray75_115); at or above it, Kelvin.
TWARM_CELSIUS_BELOW = 100.0
CELSIUS_TO_K = 273.15


@dataclass(frozen=True)
class SdfitsTable:
    """All rows of the input, concatenated in file order."""

    columns: dict[str, np.ndarray]  # name -> [N] values (strings stripped)
    data: np.ndarray  # [N, C] float32
    files: tuple[str, ...]
    telescope: str
    project: str

    @property
    def n_rows(self) -> int:
        return int(self.data.shape[0])


@dataclass(frozen=True)
class ImportResult:
    """What ``import_sdfits`` wrote."""

    out: Path
    calibration_scans: tuple[int, ...]  # scan groups with calibration/ (VANE scans)
    nod_scans: tuple[int, ...]  # scan groups with source/ (first scan of each Nod pair)
    skipped_scans: tuple[int, ...]
    receivers: tuple[int, ...]  # FDNUM of each R index
    arrays: tuple[tuple[int, int], ...]  # (IFNUM, PLNUM) of each A index
    n_channels: int
    notes: tuple[str, ...] = field(default_factory=tuple)


# -- reading ----------------------------------------------------------------------------------

def find_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory contributes its ``*.fits`` files, sorted by name."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.fits"))
            if not found:
                raise ImportFormatError(f"{p}: no *.fits file in this directory")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ImportFormatError(f"{p}: no such file or directory")
    if not files:
        raise ImportFormatError("no input file given")
    return files


def read_sdfits(files: Sequence[str | Path]) -> SdfitsTable:
    """Read the ``SINGLE DISH`` tables of ``files`` (astropy.io.fits)."""
    try:
        from astropy.io import fits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportFormatError("calpipe import sdfits needs astropy: pip install "
                                "'calpipe[gbt]'") from exc
    columns: dict[str, list[np.ndarray]] = {}
    data: list[np.ndarray] = []
    telescope, project = "", ""
    n_chan: int | None = None
    for f in files:
        try:
            hdul = fits.open(f, memmap=False)
        except OSError as exc:
            raise ImportFormatError(f"{f}: not a readable FITS file: {exc}") from exc
        with hdul:
            tables = [h for h in hdul[1:] if h.header.get("EXTNAME", "").strip() == "SINGLE DISH"]
            if not tables:
                raise ImportFormatError(f"{f}: no 'SINGLE DISH' binary table (not SDFITS)")
            telescope = telescope or str(hdul[0].header.get("TELESCOP", "")).strip()
            for h in tables:
                telescope = telescope or str(h.header.get("TELESCOP", "")).strip()
                project = project or str(h.header.get("PROJID", "")).strip()
                names = [n.upper() for n in h.columns.names]
                missing = [c for c in REQUIRED_COLUMNS if c not in names]
                if missing:
                    raise ImportFormatError(f"{f}: SDFITS table lacks the column(s) "
                                            f"{', '.join(missing)}")
                rows = h.data
                block = np.asarray(rows["DATA"])
                if block.ndim != 2:
                    raise ImportFormatError(f"{f}: DATA column is not one vector per row "
                                            f"(shape {block.shape})")
                if n_chan is None:
                    n_chan = block.shape[1]
                elif block.shape[1] != n_chan:
                    raise ImportFormatError(f"{f}: DATA has {block.shape[1]} channels, earlier "
                                            f"tables {n_chan}")
                data.append(block.astype(np.float32))  # DATA is 'E' (float32): exact
                for name in names:
                    if name in ("DATA", "FLAGS"):
                        continue
                    values = np.asarray(rows[name])
                    if values.ndim != 1:
                        continue  # vector columns other than DATA are not interpreted
                    if values.dtype.kind in "SU":
                        values = np.char.strip(values.astype(str))
                    columns.setdefault(name, []).append(values)
    assert n_chan is not None
    n_tables = len(data)
    merged = {k: np.concatenate(v) for k, v in columns.items() if len(v) == n_tables}
    return SdfitsTable(columns=merged, data=np.concatenate(data), files=tuple(map(str, files)),
                       telescope=telescope, project=project)


# -- classification ---------------------------------------------------------------------------

def _scan_kind(t: SdfitsTable, rows: np.ndarray) -> str:
    """'vane' | 'sky' | 'nod' | other procedure name (skipped)."""
    obj = set(t.columns["OBJECT"][rows].tolist())
    calpos = set(np.char.lower(t.columns["CALPOSITION"][rows]).tolist())
    proc = {str(m).split(":")[0] for m in t.columns["OBSMODE"][rows].tolist()}
    if obj == {"VANE"} or calpos == {"vane"}:
        return "vane"
    if obj == {"SKY"}:
        return "sky"
    if proc == {"Nod"}:
        return "nod"
    return "/".join(sorted(proc))


def _mjd(date_obs: np.ndarray) -> np.ndarray:
    from astropy.time import Time

    return np.asarray(Time(list(date_obs), format="isot", scale="utc").mjd, dtype=np.float64)


def _one(t: SdfitsTable, rows: np.ndarray, name: str, scan: int, rtol: float = 0.0,
         atol: float = 0.0) -> float:
    """The single value of a numeric column over ``rows`` (equal within the tolerance)."""
    v = t.columns[name][rows].astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ImportFormatError(f"scan {scan}: column {name} has a non-finite value")
    if np.ptp(v) > atol + rtol * np.max(np.abs(v)):
        raise ImportFormatError(f"scan {scan}: column {name} differs between the rows of the "
                                f"scan ({v.min()} .. {v.max()}); calpipe L0 keeps one value "
                                "per subscan")
    return float(v[0])


# -- writing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    receivers: tuple[int, ...]
    arrays: tuple[tuple[int, int], ...]
    n_channels: int


def _cube(t: SdfitsTable, rows: np.ndarray, lay: _Layout, scan: int) -> np.ndarray:
    """[C, D, R, A] float32 of one scan; integrations in file order; absent -> NaN."""
    fd = t.columns["FDNUM"][rows]
    ifn = t.columns["IFNUM"][rows]
    pl = t.columns["PLNUM"][rows]
    keys = list(zip(fd.tolist(), ifn.tolist(), pl.tolist(), strict=True))
    counts: dict[tuple[int, int, int], int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    n_d = max(counts.values())
    if len(set(counts.values())) > 1:
        log.warning("scan %d: feeds/IFs have different numbers of integrations %s; the "
                    "missing ones are NaN (no data)", scan, sorted(set(counts.values())))
    cube = np.full((lay.n_channels, n_d, len(lay.receivers), len(lay.arrays)), np.nan,
                   dtype=np.float32)
    seen: dict[tuple[int, int, int], int] = {}
    for row, k in zip(rows.tolist(), keys, strict=True):
        d = seen.get(k, 0)
        seen[k] = d + 1
        r = lay.receivers.index(int(k[0]))
        a = lay.arrays.index((int(k[1]), int(k[2])))
        cube[:, d, r, a] = t.data[row]
    return cube


def _subscan_meta(t: SdfitsTable, rows: np.ndarray, scan: int) -> dict[str, Any]:
    """Per-subscan metadata (DESIGN 2.1 names and units) from one GBT scan's rows."""
    c = t.columns
    exptime = _one(t, rows, "EXPOSURE", scan, rtol=1e-6)
    cdelt = _one(t, rows, "CDELT1", scan, rtol=1e-9)
    crpix = _one(t, rows, "CRPIX1", scan)
    crval = _one(t, rows, "CRVAL1", scan, atol=1.0)  # Hz
    twarm = _one(t, rows, "TWARM", scan, atol=0.05)
    t_vane = twarm + CELSIUS_TO_K if twarm < TWARM_CELSIUS_BELOW else twarm
    meta: dict[str, Any] = {
        "mjd": float(np.min(_mjd(c["DATE-OBS"][rows]))),
        "exptime": exptime,
        "duration": _one(t, rows, "DURATION", scan, rtol=1e-6),
        "elevation": float(np.radians(np.mean(c["ELEVATIO"][rows].astype(np.float64)))),
        "azimuth": float(np.radians(np.mean(c["AZIMUTH"][rows].astype(np.float64)))),
        "pamb": _one(t, rows, "PRESSURE", scan, atol=0.01),  # mmHg = Torr (to 1.4e-7)
        "tamb": _one(t, rows, "TAMBIENT", scan, atol=0.01),  # K
        "signal_freq": crval,
        "image_freq": crval,  # SDFITS has no LO: no image sideband (SSB rows)
        "freq_res": cdelt,
        "freq_off": 0.0,
        "ref_channel": crpix - 1.0,  # FITS pixels count from 1
        "t_vane": t_vane,
        "rest_freq": _one(t, rows, "RESTFREQ", scan, atol=1.0),
        "gbt_scan": scan,
    }
    for name in SPUR_COLUMNS:
        if name in c:
            meta[name.lower()] = _one(t, rows, name, scan)
    return meta


def _raw_headers(t: SdfitsTable, rows: np.ndarray) -> str:
    """JSON of every scalar column of every row of the subscan (kept, not interpreted)."""
    out = []
    for row in rows.tolist():
        entry = {}
        for name, values in t.columns.items():
            v = values[row]
            entry[name] = v.item() if hasattr(v, "item") else v
        out.append(entry)
    return json.dumps(out, default=str)


def _write_group(parent: Any, name: str, cube: np.ndarray, sobsmode: list[str],
                 metas: list[dict[str, Any]], extra: dict[str, np.ndarray],
                 strings: dict[str, list[str]]) -> None:
    g = parent.create_group(name)
    arr = g.create_array("data_5d", shape=cube.shape, dtype=np.float32,
                         chunks=(cube.shape[0], cube.shape[1], cube.shape[2], cube.shape[3], 1),
                         fill_value=np.float32(np.nan),
                         dimension_names=("C", "D", "R", "A", "S"))
    arr[...] = cube
    arr.attrs[FLOAT_COUNTS_ATTR] = True

    def put(key: str, values: np.ndarray, dims: tuple[str, ...]) -> None:
        a = g.create_array(key, shape=values.shape, dtype=values.dtype, dimension_names=dims)
        a[...] = values

    s = g.create_array("sobsmode", shape=(len(sobsmode),), dtype=str)
    s[...] = np.array(sobsmode, dtype=object)
    for key in metas[0]:  # float64 throughout: the SDFITS columns are 'D' (float64)
        if key in ("t_vane", "gbt_scan"):
            continue
        put(key, np.array([m[key] for m in metas], dtype=np.float64), ("S",))
    put("gbt_scan", np.array([m["gbt_scan"] for m in metas], dtype=np.int32), ("S",))
    for key, values in extra.items():
        put(key, values, ("R", "A", "S") if values.ndim == 3 else ("S",))
    for key, texts in strings.items():
        s = g.create_array(key, shape=(len(texts),), dtype=str)
        s[...] = np.array(texts, dtype=object)


def import_sdfits(inputs: Iterable[str | Path], out: str | Path, *, overwrite: bool = False
                  ) -> ImportResult:
    """Convert GBT raw SDFITS (files or directories) into an L0 session store at ``out``."""

    out = Path(out)
    files = find_inputs(inputs)
    t = read_sdfits(files)
    c = t.columns
    if np.any(c["CAL"] == "T"):
        raise ImportFormatError("rows with the noise diode on (CAL = 'T') are not supported: "
                                "this importer handles vane-calibrated (TPNOCAL) data")
    lay = _Layout(
        receivers=tuple(sorted({int(v) for v in c["FDNUM"].tolist()})),
        arrays=tuple(sorted({(int(i), int(p))
                             for i, p in zip(c["IFNUM"].tolist(), c["PLNUM"].tolist(),
                                             strict=True)})),
        n_channels=int(t.data.shape[1]),
    )
    scans = sorted({int(s) for s in c["SCAN"].tolist()})
    rows_of = {s: np.flatnonzero(c["SCAN"] == s) for s in scans}
    kinds = {s: _scan_kind(t, rows_of[s]) for s in scans}
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")

    cal_scans: list[int] = []
    nod_scans: list[int] = []
    used: set[int] = set()
    skipped: list[int] = []
    plan: list[tuple[str, int, list[int]]] = []
    for s in scans:
        kind = kinds[s]
        if kind == "vane":
            if kinds.get(s + 1) != "sky":
                raise ImportFormatError(f"VANE scan {s} is not followed by a SKY scan "
                                        f"(scan {s + 1} is {kinds.get(s + 1, 'absent')})")
            plan.append(("cal", s, [s, s + 1]))
            used.update((s, s + 1))
        elif kind == "nod" and s not in used:
            seq = set(c["PROCSEQN"][rows_of[s]].tolist())
            if seq != {1}:
                raise ImportFormatError(f"Nod scan {s} starts a pair but has PROCSEQN "
                                        f"{sorted(seq)} (expected 1)")
            partner = s + 1
            if kinds.get(partner) != "nod" or set(c["PROCSEQN"][rows_of[partner]]) != {2}:
                raise ImportFormatError(f"Nod scan {s} (PROCSEQN 1) has no PROCSEQN 2 partner "
                                        f"in scan {partner}")
            plan.append(("nod", s, [s, partner]))
            used.update((s, partner))
    for s in scans:
        if s not in used:
            skipped.append(s)
            log.warning("scan %d (%s) is not imported: only VANE/SKY and Nod are supported",
                        s, kinds[s])

    # written under a temporary name and renamed at the end: an error leaves no partial store
    tmp = out.with_name(f".{out.name}.importing")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_store(tmp, t, lay, plan, rows_of, skipped, cal_scans, nod_scans)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # overwrite: the old store goes only once the new one is complete
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("imported %d calibration and %d Nod scan group(s) into %s", len(cal_scans),
             len(nod_scans), out)
    return ImportResult(out=out, calibration_scans=tuple(cal_scans),
                        nod_scans=tuple(nod_scans), skipped_scans=tuple(skipped),
                        receivers=lay.receivers, arrays=lay.arrays,
                        n_channels=lay.n_channels)


def _write_store(out: Path, t: SdfitsTable, lay: _Layout, plan: list[tuple[str, int, list[int]]],
                 rows_of: dict[int, np.ndarray], skipped: list[int], cal_scans: list[int],
                 nod_scans: list[int]) -> None:
    """Write the planned scan groups to ``out`` (appends to cal_scans / nod_scans)."""
    import zarr

    c = t.columns
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    root.attrs.update({
        "producer": "calpipe.importers.sdfits", "telescope": t.telescope,
        "project": t.project, "input_files": [Path(f).name for f in t.files],
        "skipped_scans": skipped, "receivers_fdnum": list(lay.receivers),
        "arrays_ifnum_plnum": [list(a) for a in lay.arrays],
    })
    for kind, first, members in plan:
        cubes = [_cube(t, rows_of[m], lay, m) for m in members]
        n_d = max(x.shape[1] for x in cubes)
        cube = np.full(cubes[0].shape[:1] + (n_d,) + cubes[0].shape[2:] + (len(members),),
                       np.nan, dtype=np.float32)
        for k, x in enumerate(cubes):
            cube[:, : x.shape[1], :, :, k] = x
        metas = [_subscan_meta(t, rows_of[m], m) for m in members]
        offs_lon = np.zeros((len(lay.receivers), len(lay.arrays), len(members)))
        offs_lat = np.zeros_like(offs_lon)
        for k, m in enumerate(members):
            rows = rows_of[m]
            for row in rows.tolist():
                r = lay.receivers.index(int(c["FDNUM"][row]))
                a = lay.arrays.index((int(c["IFNUM"][row]), int(c["PLNUM"][row])))
                offs_lon[r, a, k] = float(c["FEEDXOFF"][row])
                offs_lat[r, a, k] = float(c["FEEDEOFF"][row])
        first_rows = rows_of[first]
        attrs: dict[str, Any] = {
            "scan_number": first,
            "source": str(c["OBJECT"][first_rows][0]),
            "telescope": t.telescope,
            "date_obs": str(c["DATE-OBS"][first_rows][0]),
            "rest_freq_hz": float(metas[0]["rest_freq"]),
            "line": "",
            "project": t.project,
            "gbt_scans": members,
            "procedure": str(c["OBSMODE"][first_rows][0]).split(":")[0],
            "receivers_fdnum": list(lay.receivers),
            "arrays_ifnum_plnum": [list(a) for a in lay.arrays],
            "frontend": str(c["FRONTEND"][first_rows][0]),
            "sideband": str(c["SIDEBAND"][first_rows][0]),
        }
        fb = [f"{c['FRONTEND'][rows_of[m]][0]}/VEGAS" for m in members]
        strings = {"frontend_backends": fb,
                   "raw_fits_headers": [_raw_headers(t, rows_of[m]) for m in members]}
        group = root.create_group(scan_group_name(first))
        if kind == "cal":
            attrs["instmode"] = "VANE"
            group.attrs.update(attrs)
            t_vane = np.array([m["t_vane"] for m in metas], dtype=np.float64)
            _write_group(group, "calibration", cube, ["VANE", "SKY"], metas,
                         {"thot": t_vane, "tcold": np.full(len(members), np.nan)},
                         strings)
            cal_scans.append(first)
        else:
            beams = _nod_beams(t, members, rows_of, lay)
            sob = [str(c["PROCSCAN"][rows_of[m]][0]).upper() for m in members]
            if sob != ["BEAM1", "BEAM2"]:
                raise ImportFormatError(f"Nod pair {members}: PROCSCAN is {sob}, expected "
                                        "['BEAM1', 'BEAM2']")
            attrs.update({"instmode": "NOD", "nod_beams": list(beams),
                          "nod_beams_fdnum": [lay.receivers[b] for b in beams]})
            spurs = [{k: m[k] for k in ("vsprval", "vspdelt", "vsprpix")}
                     for m in metas if "vsprval" in m and "vspdelt" in m and "vsprpix" in m]
            if len(spurs) == len(metas):
                attrs["vegas_spurs"] = spurs[0] if all(x == spurs[0] for x in spurs) else spurs
            previous = [x for x in cal_scans if x < first]
            extra: dict[str, np.ndarray] = {
                "pixel_offset_lon": offs_lon, "pixel_offset_lat": offs_lat,
                "t_vane": np.array([m["t_vane"] for m in metas], dtype=np.float64),
            }
            if previous:
                extra["lloadsn"] = np.full(len(members), previous[-1], dtype=np.int32)
            else:
                log.warning("Nod pair %s: no VANE scan before it; lloadsn not written",
                            members)
            group.attrs.update(attrs)
            _write_group(group, "source", cube, sob, metas, extra, strings)
            nod_scans.append(first)


def _nod_beams(t: SdfitsTable, members: list[int], rows_of: dict[int, np.ndarray],
               lay: _Layout) -> tuple[int, int]:
    """Receiver index of the feed centred on the target in the BEAM1 and BEAM2 scans."""
    c = t.columns
    beams = []
    for m in members:
        rows = rows_of[m]
        centred = rows[np.isclose(c["FEEDXOFF"][rows].astype(float), 0.0)
                       & np.isclose(c["FEEDEOFF"][rows].astype(float), 0.0)]
        feeds = sorted({int(f) for f in c["FDNUM"][centred].tolist()})
        if len(feeds) != 1:
            raise ImportFormatError(f"Nod scan {m}: cannot tell the nodding beam (feeds with "
                                    f"FEEDXOFF = FEEDEOFF = 0: {feeds})")
        beams.append(lay.receivers.index(feeds[0]))
    if beams[0] == beams[1]:
        raise ImportFormatError(f"Nod pair {members}: both scans track feed "
                                f"{lay.receivers[beams[0]]}")
    return beams[0], beams[1]


__all__ = ["ImportResult", "SdfitsTable", "find_inputs", "import_sdfits", "read_sdfits"]
