"""Library side of the Snakemake workflow (DESIGN 4.2): manifest, stage runner, aggregation, CLI.

The rules in ``workflow/rules/*.smk`` are thin: each calls one ``workflow/scripts/*.py`` adapter,
which calls :func:`script_main` here. Everything the rules need lives in this module so that it
is tested and typed like the rest of the library.

Layout of a run (paths relative to the Snakemake working directory)::

    results/
      failures.json               all sessions: {"scan","stage","error","message","session"}
      run_summary.json            counts, timings, pwv / T_sys overview, exit code
      <session>/
        manifest.json             scans of the store, written at parse time by the main process
        stamps/<scan>.json        per-scan input stamp (file stats or digests)
        work/<scan>/*.npz|json    stage artifacts + stage records (temp unless kept)
        status/<scan>.json        per-scan status: ok / failed (stage, error, message), timings
        l1.zarr/scan_NNNNNN       the L1 group, written atomically by the calibrate rule
        failures.json             this session only, exactly DESIGN 2.3
        logs/, benchmarks/

Soft failure: a ``CalibrationError`` in a stage is written as a failure record (the stage's
artifact becomes a :class:`StageFailure` and its record carries the failure); later stages of
the scan pass it on without work. Any other exception propagates and fails the job.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from calpipe import __version__
from calpipe.artifacts import atomic_write_text, load_artifact, save_artifact
from calpipe.config import CalibrationConfig
from calpipe.errors import ArtifactError, CalibrationError, ConfigError, StoreError
from calpipe.pipeline import StageClock, output_lock

log = logging.getLogger(__name__)

RESULTS = "results"
SCAN_ID = r"\d{6,9}"  # wildcard constraint: zero-padded scan number, as in scan_NNNNNN
SESSION_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
STAGE_ORDER = ("load", "resolve", "prepare", "atmosphere", "calibrate", "write")
MANIFEST_FORMAT = "calpipe-manifest"

#: the calibration options each stage depends on (its rule param digest); calibrate and the
#: L1 write record the digest of the whole configuration (CalibrationConfig.digest).
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "resolve": ("physics", "gs_xs", "gi_xi", "f_eff", "sideband_gains_file", "clip_counts",
                "clip_trec",
                "clip_smooth_channels"),
    "prepare": ("mode", "reference"),
    "atmosphere": ("physics", "t_atm", "atmosphere_table", "sky_model", "sky_table_dir",
                   "sky_table_build", "pwv_fixed_mm", "pwv_fallback_mm",
                   "pwv_per_pixel", "pwv_grid_min_mm", "pwv_grid_max_mm", "pwv_grid_points",
                   "pwv_newton_max_iter", "pwv_newton_tol", "t_cmb"),
}


# -- names and paths --------------------------------------------------------------------------

def scan_id(scan: int) -> str:
    """The wildcard value of a scan: its number zero padded to six digits."""
    return f"{int(scan):06d}"


def session_dir(session: str, results: str = RESULTS) -> Path:
    return Path(results) / session


def manifest_path(session: str, results: str = RESULTS) -> Path:
    return session_dir(session, results) / "manifest.json"


def stamp_path(session: str, sid: str, results: str = RESULTS) -> Path:
    return session_dir(session, results) / "stamps" / f"{sid}.json"


# -- configuration ----------------------------------------------------------------------------

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


def check_session_names(stores: Mapping[str, Any]) -> None:
    for name in stores:
        if not re.fullmatch(SESSION_NAME, str(name)):
            raise ConfigError(f"session name {name!r} must match {SESSION_NAME}")


# -- manifest and input stamps ----------------------------------------------------------------

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


def scan_stamp(session: Any, scan: int, mode: str = "stat") -> dict[str, Any]:
    """What a scan's results depend on in the L0 store, as a small JSON-able record.

    ``content``: the content digests of the scan's source data and of its calibration snapshot
    (``ScanData.content_digest``, ``CalibrationSnapshot.content_digest``) plus the scan
    attributes; it reads the scan. ``stat``: sizes and mtimes of the files of the scan group
    and of its calibration scan group (no data read). A scan that cannot be read gets the
    error and the ``stat`` fingerprint instead, so repairing it changes its stamp.
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
            return stamp
        cal_scan = session.calibration_scan_for(scan)
        groups = [own] if cal_scan == scan else [own, store / scan_group_name(cal_scan)]
        stamp.update(calibration_scan=int(cal_scan), fingerprint=_stat_fingerprint(groups))
        return stamp
    except CalibrationError as exc:
        groups = [own]
        try:
            cal_scan = session.calibration_scan_for(scan)
            if cal_scan != scan:
                groups.append(store / scan_group_name(cal_scan))
        except CalibrationError:
            pass
        stamp.update(error=type(exc).__name__, message=str(exc),
                     fingerprint=_stat_fingerprint(groups))
        return stamp


def build_manifest(session_name: str, store: str | Path, *, stamp_mode: str = "stat",
                   results: str = RESULTS) -> dict[str, Any]:
    """List the store's scans through calpipe, write stamps (on change) and the manifest.

    Returns the manifest. Only the main Snakemake process (or ``calpipe manifest``) calls
    this; cluster jobs read the manifest file.
    """
    from calpipe.l0 import open_session

    t0 = time.perf_counter()
    session = open_session(store)  # StoreError: fatal
    source = session.source_scans()
    changed = 0
    for scan in source:
        stamp = scan_stamp(session, scan, stamp_mode)
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
        "ignored_groups": list(session.ignored_groups),
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


def load_manifests(config: Mapping[str, Any], *, main_process: bool) -> dict[str, list[str]]:
    """Scan ids per session for the Snakefile (parse time).

    The main process refreshes each manifest (``manifest.refresh``, default true) or builds it
    when missing; other processes (cluster jobs) only read it.
    """
    stores = dict(config["stores"])
    check_session_names(stores)
    opts = dict(config.get("manifest") or {})
    refresh = bool(opts.get("refresh", True))
    mode = str(opts.get("stamp", "stat"))
    out: dict[str, list[str]] = {}
    for name, store in stores.items():
        if main_process and (refresh or not manifest_path(name).exists()):
            manifest = build_manifest(name, store, stamp_mode=mode)
        else:
            manifest = read_manifest(name)
        out[name] = list(manifest["scans"])
    return out


# -- stage records ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StageFailure:
    """Stands in for a stage artifact when the scan failed (in this or an earlier stage)."""

    scan: int
    stage: str
    error: str
    message: str


# the in-process mode's stage clock: same stage names, same failure attribution
Timer = StageClock


def _read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(Path(path), json.dumps(value, indent=1, sort_keys=True,
                                             default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _record(scan: int, rule: str, timer: Timer, failure: Mapping[str, Any] | None,
            upstream: Sequence[Mapping[str, Any]] = (), **extra: Any) -> dict[str, Any]:
    timings = {rule: dict(timer.timings)}
    for rec in upstream:
        timings.update(rec.get("timings", {}))
    merged: dict[str, Any] = {}
    for rec in upstream:
        merged.update(rec.get("extra", {}))
    merged.update(extra)
    out: dict[str, Any] = {"scan": int(scan), "rule": rule,
                           "failure": dict(failure) if failure else None, "timings": timings}
    if merged:
        out["extra"] = merged
    return out


def _failure_dict(scan: int, stage: str, exc: BaseException) -> dict[str, Any]:
    return {"scan": int(scan), "stage": stage, "error": type(exc).__name__, "message": str(exc)}


def _first_failure(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The upstream failure to pass on: earliest in stage order (load < resolve < prepare)."""
    failures = [r["failure"] for r in records if r.get("failure")]
    if not failures:
        return None
    return dict(min(failures, key=lambda f: STAGE_ORDER.index(f["stage"])))


def _save_failure(failure: Mapping[str, Any], *paths: str | Path) -> None:
    obj = StageFailure(int(failure["scan"]), str(failure["stage"]), str(failure["error"]),
                       str(failure["message"]))
    for p in paths:
        save_artifact(obj, p)


def _load(cls: type, path: str | Path) -> Any:
    """Load an upstream artifact; an unreadable one is an infrastructure fault (hard)."""
    try:
        return load_artifact(cls, path)
    except ArtifactError as exc:
        raise RuntimeError(f"corrupt intermediate artifact (delete it and rerun): {exc}") from exc


# -- stage runners ----------------------------------------------------------------------------

def run_resolve(store: str, scan: int, config: CalibrationConfig, artifact: str,
                record: str) -> dict[str, Any]:
    """Rule resolve: read L0 (scan + loads) -> CalibrationLoadFull."""
    from calpipe.l0 import open_session
    from calpipe.stages import resolve

    timer = Timer()
    failure = None
    digests: dict[str, Any] = {}
    session = open_session(store)
    try:
        with timer("load"):
            data = session.load_scan(scan)
            cal = session.load_calibration(scan, data.meta.lloadsn)
        digests = {"scan": data.content_digest, "calibration": cal.content_digest,
                   "calibration_scan": int(cal.scan)}
        with timer("resolve"):
            load = resolve(data, cal, config)
    except CalibrationError as exc:
        failure = _failure_dict(scan, timer.stage, exc)
        _save_failure(failure, artifact)
    else:
        save_artifact(load, artifact)
    rec = _record(scan, "resolve", timer, failure, content_digest=digests)
    _write_json(record, rec)
    return rec


def run_prepare(store: str, scan: int, config: CalibrationConfig, artifact: str,
                geometry: str, record: str) -> dict[str, Any]:
    """Rule prepare: read L0 (scan) -> PreparedData and ScanGeometry."""
    from calpipe.l0 import open_session
    from calpipe.stages import ScanGeometry, prepare

    timer = Timer()
    failure = None
    session = open_session(store)
    try:
        with timer("load"):
            data = session.load_scan(scan)
        with timer("prepare"):
            prepared = prepare(data, config)
            geom = ScanGeometry.of(data)
    except CalibrationError as exc:
        failure = _failure_dict(scan, timer.stage, exc)
        _save_failure(failure, artifact, geometry)
    else:
        save_artifact(prepared, artifact)
        save_artifact(geom, geometry)
    rec = _record(scan, "prepare", timer, failure)
    _write_json(record, rec)
    return rec


def run_atmosphere(scan: int, config: CalibrationConfig, resolve_art: str, resolve_rec: str,
                   prepare_art: str, geometry_art: str, prepare_rec: str, artifact: str,
                   record: str) -> dict[str, Any]:
    """Rule atmosphere: artifacts of resolve + prepare -> AtmosphereResult (no L0 read)."""
    from calpipe.physics.loads import CalibrationLoadFull
    from calpipe.physics.reference import PreparedData
    from calpipe.pipeline import load_table
    from calpipe.stages import ScanGeometry, atmosphere

    upstream = [_read_json(resolve_rec), _read_json(prepare_rec)]
    timer = Timer()
    failure = _first_failure(upstream)
    if failure is None:
        load = _load(CalibrationLoadFull, resolve_art)
        prepared = _load(PreparedData, prepare_art)
        geom = _load(ScanGeometry, geometry_art)
        table = load_table(config)  # ConfigError / OSError: fatal
        try:
            with timer("atmosphere"):
                atm = atmosphere(geom, load, prepared, config, table)
        except CalibrationError as exc:
            failure = _failure_dict(scan, "atmosphere", exc)
        else:
            save_artifact(atm, artifact)
    if failure is not None:
        _save_failure(failure, artifact)
    rec = _record(scan, "atmosphere", timer, failure, upstream)
    _write_json(record, rec)
    return rec


def _remove_scan_group(l1_store: Path, scan: int, keep_partial: bool = False) -> None:
    """Remove this scan's leftovers (interrupted partial groups) and, unless asked, its group."""
    from calpipe.l0 import scan_group_name
    from calpipe.l1 import PARTIAL_PREFIX

    name = scan_group_name(scan)
    for stale in list(l1_store.glob(f"{PARTIAL_PREFIX}{name}-*")) + list(
            l1_store.glob(f"{PARTIAL_PREFIX}old-{name}-*")):
        shutil.rmtree(stale, ignore_errors=True)
    final = l1_store / name
    if not keep_partial and final.exists():
        trash = l1_store / f"{PARTIAL_PREFIX}old-{name}-{os.getpid()}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)


def ensure_l1_store(path: str | Path) -> None:
    """Create the L1 store root atomically if missing; safe with concurrent jobs.

    The root is built in a temporary directory next to it and renamed into place; a job that
    loses the race discards its copy. An existing root must be a calpipe L1 store. (Never
    calls ``l1.init_store`` on a shared store: that removes every partial group, including
    those other running jobs are writing.)
    """
    import zarr

    from calpipe.l1 import FORMAT_NAME, FORMAT_VERSION

    path = Path(path)
    if not (path / "zarr.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.init-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                           "producer": f"calpipe {__version__}"})
        try:
            os.rename(tmp, path)
        except OSError:  # another job created it first (ENOTEMPTY / EEXIST)
            shutil.rmtree(tmp, ignore_errors=True)
    root = zarr.open_group(str(path), mode="r")
    if root.attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} exists and is not a calpipe L1 store")


def run_calibrate(store: str, scan: int, session_name: str, config: CalibrationConfig,
                  l1_store: str, resolve_art: str, prepare_art: str, atmosphere_art: str,
                  atmosphere_rec: str, status: str) -> dict[str, Any]:
    """Rule calibrate: re-read the scan's L0 data, calibrate, write the L1 group, status."""
    from calpipe import l1
    from calpipe.l0 import open_session
    from calpipe.physics.atmosphere import AtmosphereResult
    from calpipe.physics.loads import CalibrationLoadFull
    from calpipe.physics.reference import PreparedData
    from calpipe.pipeline import provenance
    from calpipe.stages import calibrate

    upstream = _read_json(atmosphere_rec)
    timer = Timer()
    failure = _first_failure([upstream])
    out = Path(l1_store)
    ensure_l1_store(out)
    summary: dict[str, Any] = {}
    if failure is None:
        load = _load(CalibrationLoadFull, resolve_art)
        prepared = _load(PreparedData, prepare_art)
        atm = _load(AtmosphereResult, atmosphere_art)
        session = open_session(store)
        try:
            with timer("load"):
                data = session.load_scan(scan)
            with timer("calibrate"):
                result = calibrate(data, load, prepared, atm, config)
        except CalibrationError as exc:
            failure = _failure_dict(scan, timer.stage, exc)
        else:
            del data
            digests = dict(upstream.get("extra", {}).get("content_digest", {}))
            timings = _flat_timings({**upstream["timings"], "calibrate": timer.timings})
            table = SimpleNamespace(model=atm.table_model, digest=atm.table_digest)
            extra = {"provenance": {**provenance(config, Path(store), table),  # type: ignore[arg-type]
                                    "content_digest": digests,
                                    "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                    "mode": "snakemake"},
                     "timings_s": timings}
            with output_lock(out, shared=True), timer("write"):
                _remove_scan_group(out, scan, keep_partial=True)
                l1.write_scan(out, result, extra)
            t_sys = result.t_sys[np.isfinite(result.t_sys)]
            summary = {"mode": result.mode, "pwv_mm": float(atm.pwv_mm.mean()),
                       "median_t_sys_k": float(np.median(t_sys)) if t_sys.size else None}
    if failure is not None:
        with output_lock(out, shared=True):
            _remove_scan_group(out, scan)  # no stale L1 group of an earlier, successful run
    timings_by_rule = {**upstream["timings"], "calibrate": dict(timer.timings)}
    rec = {
        "scan": int(scan),
        "session": session_name,
        "ok": failure is None,
        "stage": failure["stage"] if failure else None,
        "error": failure["error"] if failure else None,
        "message": failure["message"] if failure else None,
        "timings_s": _flat_timings(timings_by_rule),
        "timings_by_rule": timings_by_rule,
        "calpipe_version": __version__,
        "config_digest": config.digest,
        **summary,
    }
    _write_json(status, rec)
    return rec


def _flat_timings(by_rule: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{rule: {stage: s}} -> {stage: s} summed over rules (load is read by several rules)."""
    flat: dict[str, float] = {}
    for stages in by_rule.values():
        for stage, seconds in stages.items():
            flat[stage] = flat.get(stage, 0.0) + float(seconds)
    return flat


# -- aggregation ------------------------------------------------------------------------------

def aggregate(status_files: Sequence[str | Path], failures_out: str | Path,
              summary_out: str | Path, session_failures: Mapping[str, str | Path] | None = None,
              ) -> dict[str, Any]:
    """Read every per-scan status; write failures.json (always) and the run summary."""
    from calpipe.pipeline import Failure, write_failures

    statuses = [_read_json(p) for p in status_files]
    failures = [s for s in statuses if not s["ok"]]
    ok = [s for s in statuses if s["ok"]]
    rows = sorted(({"scan": s["scan"], "stage": s["stage"], "error": s["error"],
                    "message": s["message"], "session": s["session"]} for s in failures),
                  key=lambda r: (r["scan"], r["session"]))
    _write_json(failures_out, rows)
    for name, path in (session_failures or {}).items():
        write_failures(Path(path), [Failure(r["scan"], r["stage"], r["error"], r["message"])
                                    for r in rows if r["session"] == name])
    n, n_fail = len(statuses), len(failures)
    exit_code = (0 if ok else 1) if not failures else (2 if ok else 1)
    totals: dict[str, float] = {}
    for s in statuses:
        for stage, seconds in s.get("timings_s", {}).items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    pwv = [s["pwv_mm"] for s in ok if s.get("pwv_mm") is not None]
    tsys = [s["median_t_sys_k"] for s in ok if s.get("median_t_sys_k") is not None]
    sessions = sorted({s["session"] for s in statuses})
    summary = {
        "mode": "snakemake",
        "calpipe_version": __version__,
        "n_scans": n,
        "n_succeeded": len(ok),
        "n_failed": n_fail,
        "exit_code": exit_code,
        "sessions": {name: {"n_scans": sum(s["session"] == name for s in statuses),
                            "n_failed": sum(s["session"] == name for s in failures)}
                     for name in sessions},
        "config_digests": sorted({s["config_digest"] for s in statuses}),
        "stage_seconds_total": totals,
        "pwv_mm": _overview(pwv),
        "median_t_sys_k": _overview(tsys),
        "scans": [{k: s.get(k) for k in ("session", "scan", "mode", "pwv_mm", "median_t_sys_k",
                                         "timings_s")}
                  for s in sorted(ok, key=lambda s: (s["scan"], s["session"]))],
        "failures": rows,
        "message": failure_message(n_fail, n),
    }
    _write_json(summary_out, summary)
    return summary


def _overview(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = np.asarray(values, dtype=float)
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def failure_message(n_failed: int, n_scans: int) -> str:
    if n_failed:
        return f"{n_failed} of {n_scans} scans failed, see failures.json"
    return f"all {n_scans} scans calibrated"


def summary_message(summary_path: str | Path) -> str | None:
    """The closing line of a run, from its run summary (None when there is none)."""
    try:
        summary = _read_json(summary_path)
    except (OSError, ValueError):
        return None
    return failure_message(int(summary["n_failed"]), int(summary["n_scans"]))


# -- Snakemake script adapter -----------------------------------------------------------------

def _setup_job_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def script_main(smk: Any, rule: str) -> None:
    """Entry point of every ``workflow/scripts/*.py`` adapter (``smk`` = ``snakemake``)."""
    _setup_job_logging(smk.log[0] if smk.log else None)
    try:
        _dispatch(smk, rule)
    except BaseException:
        log.exception("rule %s failed (hard error)", rule)
        raise


def _dispatch(smk: Any, rule: str) -> None:
    i, o, p = smk.input, smk.output, smk.params
    if rule == "aggregate":
        session_failures = dict(zip(p.sessions, o.session_failures, strict=True))
        summary = aggregate(list(i.status), o.failures, o.summary, session_failures)
        log.info("%s", summary["message"])
        return
    # the whole calibration section; the rule's param is the digest of what this stage uses
    config = calibration_config(smk.config.get("calibration"))
    scan = int(smk.wildcards.scan)
    store = str(read_manifest(smk.wildcards.session)["store"]) if "manifest" in p.keys() else ""
    log.info("calpipe %s, rule %s, session %s, scan %d, config %s", __version__, rule,
             smk.wildcards.session, scan, config.digest)
    if rule == "resolve":
        rec = run_resolve(store, scan, config, o.artifact, o.record)
    elif rule == "prepare":
        rec = run_prepare(store, scan, config, o.artifact, o.geometry, o.record)
    elif rule == "atmosphere":
        rec = run_atmosphere(scan, config, i.resolve, i.resolve_record, i.prepare, i.geometry,
                             i.prepare_record, o.artifact, o.record)
    elif rule == "calibrate":
        rec = run_calibrate(store, scan, smk.wildcards.session, config, p.l1_store,
                            i.resolve, i.prepare, i.atmosphere, i.atmosphere_record, o.status)
    else:  # pragma: no cover - a wiring bug
        raise ValueError(f"unknown rule {rule!r}")
    failure = rec.get("failure") if "failure" in rec else (None if rec.get("ok") else rec)
    if failure:
        log.warning("scan %d failed in stage %s: %s: %s", scan, failure["stage"],
                    failure["error"], failure["message"])
    else:
        log.info("scan %d: %s done", scan, rule)


# -- CLI: calpipe run / calpipe manifest -------------------------------------------------------

def repo_snakefile() -> Path | None:
    """workflow/Snakefile of the source checkout calpipe is installed from (editable)."""
    candidate = Path(__file__).resolve().parent.parent / "workflow" / "Snakefile"
    return candidate if candidate.exists() else None


def _snakemake_command() -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def _cmd_run(ns: argparse.Namespace, rest: list[str]) -> int:
    directory = Path(ns.directory)
    cmd = _snakemake_command()
    snakefile = ns.snakefile or repo_snakefile()
    if snakefile is not None:
        cmd += ["--snakefile", str(Path(snakefile).resolve())]
    cmd += ["--directory", str(directory)]
    if ns.configfile:
        cmd += ["--configfile", str(Path(ns.configfile).resolve())]
    if ns.cores is not None:
        cmd += ["--cores", str(ns.cores)]
    if rest and rest[0] == "--":
        rest = rest[1:]
    profile_given = any(a.split("=")[0] in ("--workflow-profile", "--profile") for a in rest)
    default_profile = Path(__file__).resolve().parent.parent / "profiles" / "default"
    if not profile_given and default_profile.is_dir():
        cmd += ["--workflow-profile", str(default_profile)]
    cmd += list(rest)
    log.info("running: %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        print(f"calpipe run: snakemake failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    if any(a in ("-n", "--dry-run", "--dryrun", "--lint", "--report") or a.startswith("--report")
           for a in rest):
        return 0
    summary_path = directory / RESULTS / "run_summary.json"
    try:
        summary = _read_json(summary_path)
    except (OSError, ValueError):
        print(f"calpipe run: no run summary at {summary_path}", file=sys.stderr)
        return 1
    print(failure_message(int(summary["n_failed"]), int(summary["n_scans"])))
    return int(summary["exit_code"])


def _cmd_manifest(ns: argparse.Namespace) -> int:
    import yaml

    os.chdir(ns.directory)
    config: dict[str, Any] = {}
    if not ns.store or Path(ns.configfile).exists():
        try:
            config = yaml.safe_load(Path(ns.configfile).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {ns.configfile}: {exc}") from exc
    stores = dict(config.get("stores") or {})
    if ns.store:
        stores = {ns.session: ns.store}
    if not stores:
        raise ConfigError("no stores: give STORE or a config file with 'stores'")
    check_session_names(stores)
    mode = ns.stamp or str((config.get("manifest") or {}).get("stamp", "stat"))
    for name, store in stores.items():
        manifest = build_manifest(name, store, stamp_mode=mode)
        print(f"{manifest_path(name)}: {len(manifest['scans'])} scans "
              f"({len(manifest['calibration_only'])} calibration-only) from {store}")
    return 0


def add_cli(sub: Any) -> None:
    """Register ``calpipe run`` and ``calpipe manifest`` on the CLI's subparsers."""
    p = sub.add_parser(
        "run", help="run the Snakemake workflow (exit 0 all ok / 2 partial / 1 failed)",
        description="Run workflow/Snakefile through the snakemake command line (profiles work: "
                    "--workflow-profile profiles/slurm). Unknown options go to snakemake.")
    p.add_argument("--directory", "-d", default=".", help="working directory [.]")
    p.add_argument("--configfile", help="workflow config [config/config.yaml in DIRECTORY]")
    p.add_argument("--snakefile", help="Snakefile [the calpipe checkout's workflow/Snakefile]")
    p.add_argument("--cores", "-c", help="cores for a local run (passed to snakemake)")
    p.set_defaults(func=_cmd_run, takes_rest=True)

    p = sub.add_parser("manifest", help="write the scan manifest(s) and input stamps of a run")
    p.add_argument("store", nargs="?", help="one L0 store (else all stores of the config)")
    p.add_argument("--session", default="demo", help="session name for STORE [demo]")
    p.add_argument("--configfile", default="config/config.yaml",
                   help="workflow config [config/config.yaml]")
    p.add_argument("--directory", "-d", default=".", help="working directory [.]")
    p.add_argument("--stamp", choices=("content", "stat"),
                   help="input stamp mode [config manifest.stamp, else stat]")
    p.set_defaults(func=_cmd_manifest)


def artifact_fields(cls: type) -> list[str]:
    """Field names of a stage dataclass (docs helper)."""
    return [f.name for f in dataclasses.fields(cls)]
