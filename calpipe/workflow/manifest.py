"""The scan manifest and per-scan input stamps (read by the Snakefile at parse time).

The main Snakemake process lists each store once through calpipe and writes
``results/<session>/manifest.json``; cluster jobs read that file instead of opening the store.
A store that does not exist yet (a fresh checkout: ``snakemake --lint`` / ``-n``) gives an
empty manifest and a warning; a real run then stops with one line naming the config key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calpipe.artifacts import atomic_write_text
from calpipe.config import CalibrationConfig
from calpipe.errors import ConfigError, StoreError
from calpipe.runner import is_scan_fault, reported_groups
from calpipe.workflow.paths import (
    RESULTS,
    check_session_names,
    manifest_path,
    scan_id,
    stamp_path,
)

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "calpipe-manifest"

#: the calibration options each stage depends on (its rule param digest); calibrate and the
#: L1 write record the digest of the whole configuration (CalibrationConfig.digest).
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "resolve": ("physics", "gs_xs", "gi_xi", "f_eff", "sideband_gains_file", "clip_counts",
                "clip_trec",
                "clip_smooth_channels", "vane_t_cal", "vane_t_cal_method", "vane_t_atm",
                "vane_tau_zenith", "flag_vegas_spurs",  # vane_*: issue 16 (T_cal in resolve)
                "telescope", "gain_interpolate"),  # issue 14: profile f_eff, site; gain drift
    "prepare": ("mode", "reference"),
    "atmosphere": ("physics", "t_atm", "atmosphere_table", "sky_model", "sky_table_dir",
                   "sky_table_build", "pwv_fixed_mm", "pwv_fallback_mm",
                   "pwv_per_pixel", "pwv_per_pair", "pwv_grid_min_mm", "pwv_grid_max_mm",
                   "pwv_grid_points",
                   "pwv_newton_max_iter", "pwv_newton_tol", "t_cmb"),
    # issue 14: the SKYDIFF history chain (what resolve and prepare use enters through their
    # artifacts); its rules are in the DAG only when skydiff > 0
    "skydiff": ("skydiff",),
}


def calibration_config(section: Mapping[str, Any] | None) -> CalibrationConfig:
    """CalibrationConfig from the workflow config's ``calibration`` section.

    ``null`` values mean the library default; an integer given for a float option is made a
    float so that ``clip_trec: 5`` and ``clip_trec: 5.0`` have the same digest.
    """
    values = {k: v for k, v in dict(section or {}).items() if v is not None}
    defaults = CalibrationConfig()
    for name, value in list(values.items()):
        default = getattr(defaults, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(default, float):
            values[name] = float(value)
    return CalibrationConfig.from_mapping(values)


def stage_digest(config: CalibrationConfig, stage: str) -> str:
    """Digest of the options ``stage`` depends on (the whole config for calibrate)."""
    names = STAGE_OPTIONS.get(stage)
    if names is None:
        return config.digest
    values = {n: getattr(config, n) for n in names}
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_if_changed(path: Path, text: str) -> bool:
    """Atomically write ``text`` unless the file already holds it (keeps the mtime)."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    atomic_write_text(path, text)
    return True


def _stat_fingerprint(paths: Sequence[Path]) -> str:
    """blake2b over (relative path, size, mtime_ns) of every file under ``paths``."""
    h = hashlib.blake2b(digest_size=16)
    for base in paths:
        for root, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                p = Path(root) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                h.update(f"{p.relative_to(base.parent)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _next_calibration(session: Any, scan: int) -> int | None:
    """The next calibration snapshot of ``scan`` (gain_interpolate), None when there is none
    yet (a later one then changes the stamp: the scan is rerun)."""
    from calpipe.errors import MissingLoadError

    try:
        return int(session.next_calibration_scan(scan, session.calibration_scan_for(scan)))
    except MissingLoadError:
        return None


def scan_stamp(session: Any, scan: int, mode: str = "stat",
               next_calibration: bool = False) -> dict[str, Any]:
    """What a scan's results depend on in the L0 store, as a small JSON-able record.

    ``content``: the content digests of the scan's source data and of its calibration snapshot
    (``ScanData.content_digest``, ``CalibrationSnapshot.content_digest``) plus the scan
    attributes; it reads the scan. ``stat``: sizes and mtimes of the files of the scan group
    and of its calibration scan group (no data read). A scan that cannot be read gets the
    error and the ``stat`` fingerprint instead, so repairing it changes its stamp.
    ``next_calibration`` (``gain_interpolate``, issue 14): the next calibration snapshot is an
    input too (its number, and its digest or its group's files).
    """
    from calpipe.l0 import scan_group_name

    store = Path(session.path)
    stamp: dict[str, Any] = {"scan": int(scan), "mode": mode}
    own = store / scan_group_name(scan)
    try:
        if mode == "content":
            data = session.load_scan(scan)
            cal = session.load_calibration(scan, data.meta.lloadsn)
            attrs = json.dumps(dict(data.attrs), sort_keys=True, default=str)
            stamp.update(scan_digest=data.content_digest, calibration_scan=int(cal.scan),
                         calibration_digest=cal.content_digest,
                         attrs_digest=hashlib.blake2b(attrs.encode(), digest_size=16).hexdigest())
            if next_calibration:
                nxt = _next_calibration(session, scan)
                stamp.update(next_calibration_scan=nxt, next_calibration_digest=(
                    None if nxt is None else session.load_calibration(nxt).content_digest))
            return stamp
        cal_scan = session.calibration_scan_for(scan)
        groups = [own] if cal_scan == scan else [own, store / scan_group_name(cal_scan)]
        if next_calibration:
            nxt = _next_calibration(session, scan)
            stamp["next_calibration_scan"] = nxt
            if nxt is not None:
                groups.append(store / scan_group_name(nxt))
        stamp.update(calibration_scan=int(cal_scan), fingerprint=_stat_fingerprint(groups))
        return stamp
    except Exception as exc:  # any per-scan fault: this scan's stamp, never the listing
        if not is_scan_fault(exc):
            raise
        groups = [own]
        try:
            cal_scan = session.calibration_scan_for(scan)
            if cal_scan != scan:
                groups.append(store / scan_group_name(cal_scan))
        except Exception as inner:
            if not is_scan_fault(inner):
                raise
        stamp.update(error=type(exc).__name__, message=str(exc),
                     fingerprint=_stat_fingerprint(groups))
        return stamp


def build_manifest(session_name: str, store: str | Path, *, stamp_mode: str = "stat",
                   results: str = RESULTS, next_calibration: bool = False) -> dict[str, Any]:
    """List the store's scans through calpipe, write stamps (on change) and the manifest.

    Returns the manifest. Only the main Snakemake process (or ``calpipe manifest``) calls
    this; cluster jobs read the manifest file.
    """
    from calpipe.l0 import open_session

    t0 = time.perf_counter()
    session = open_session(store)  # StoreError: fatal
    source = session.source_scans()
    ignored = reported_groups(session)
    changed = 0
    for scan in source:
        stamp = scan_stamp(session, scan, stamp_mode, next_calibration)
        changed += _write_if_changed(stamp_path(session_name, scan_id(scan), results),
                                     json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "session": session_name,
        "store": str(Path(store).resolve()),
        "stamp_mode": stamp_mode,
        "scans": [scan_id(n) for n in source],
        "calibration_only": [n for n in session.scans() if n not in set(source)],
        "ignored_groups": ignored,
    }
    _write_if_changed(manifest_path(session_name, results),
                      json.dumps(manifest, indent=1) + "\n")
    log.info("manifest %s: %d scans (%d stamps changed) in %.2f s", session_name, len(source),
             changed, time.perf_counter() - t0)
    return manifest


def read_manifest(session_name: str, results: str = RESULTS) -> dict[str, Any]:
    path = manifest_path(session_name, results)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the scan manifest {path}: {exc}; run `calpipe manifest` "
                         "or snakemake from the main process first") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise StoreError(f"{path} is not a calpipe manifest")
    return manifest


def load_manifests(config: Mapping[str, Any], *, main_process: bool,
                   allow_missing: bool = False) -> dict[str, list[str]]:
    """Scan ids per session for the Snakefile (parse time).

    The main process refreshes each manifest (``manifest.refresh``, default true) or builds it
    when missing; other processes (cluster jobs) only read it. A store that does not exist is
    a ConfigError naming the config key and the path, unless ``allow_missing`` (lint, dry
    run on a fresh checkout): then the session has no scans and a warning says why.
    """
    stores = dict(config["stores"])
    check_session_names(stores)
    opts = dict(config.get("manifest") or {})
    refresh = bool(opts.get("refresh", True))
    mode = str(opts.get("stamp", "stat"))
    calib = dict(config.get("calibration") or {})
    # issue 14: the next snapshot is an input (gain_interpolate, calibration_select)
    next_calibration = calibration_config(calib).wants_next_calibration
    out: dict[str, list[str]] = {}
    for name, store in stores.items():
        if main_process and not Path(store).exists():
            message = (f"stores.{name}: the L0 store {store} does not exist "
                       f"(make one with `calpipe simulate {store}` or edit the config)")
            if not allow_missing:
                raise ConfigError(message)
            log.warning("%s; no scans for session %s", message, name)
            out[name] = []
            continue
        if main_process and (refresh or not manifest_path(name).exists()):
            manifest = build_manifest(name, store, stamp_mode=mode,
                                      next_calibration=next_calibration)
        else:
            manifest = read_manifest(name)
        out[name] = list(manifest["scans"])
    return out


def manifest_store(session: str) -> str:
    """The L0 store path of a session, as its manifest recorded it (jobs use this)."""
    return str(read_manifest(session)["store"])
