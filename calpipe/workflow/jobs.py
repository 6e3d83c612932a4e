"""The Snakemake jobs of one scan: each runs its stage(s) in a :class:`calpipe.runner.ScanRun`.

A job reads only what its stage needs from L0: resolve the scan's metadata and its load
subscans, prepare the metadata and the OFF subscans, calibrate the ON subscans. Between jobs
the state travels in artifacts (``calpipe.artifacts``) and a small JSON record per job
(failure, stage timings, digests). A job of a scan that failed upstream runs no stage: its
``ScanRun`` is seeded with the upstream failure, and it writes placeholders so that the DAG
completes. Run-level faults (store, configuration, OSError) fail the job, so Snakemake's
``--retries`` and ``--keep-going`` apply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calpipe.artifacts import load_artifact, save_artifact
from calpipe.config import CalibrationConfig
from calpipe.errors import ArtifactError
from calpipe.runner import Failure, ScanRun, ScanStatus, scan_provenance, write_json
from calpipe.schema import STAGES

log = logging.getLogger(__name__)

#: when two upstream jobs both failed in stage "load", the in-process order decides: the
#: source counts (prepare) are read before the calibration snapshot (resolve)
_RULE_RANK = {"prepare": 0, "resolve": 1}


@dataclass(frozen=True)
class StageFailure:
    """Stands in for a stage artifact when the scan failed (in this or an earlier stage)."""

    scan: int
    stage: str
    error: str
    message: str


def _read_json(path: str | Path) -> dict[str, Any]:
    value = json.loads(Path(path).read_text())
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


def _load(cls: type, path: str | Path) -> Any:
    """Load an upstream artifact; an unreadable one is an infrastructure fault (the job fails:
    delete the artifact and rerun)."""
    try:
        return load_artifact(cls, path)
    except ArtifactError as exc:
        raise RuntimeError(f"corrupt intermediate artifact (delete it and rerun): {exc}") from exc


def upstream_run(scan: int, records: Sequence[Mapping[str, Any]]) -> ScanRun:
    """A ScanRun seeded with the upstream jobs' first failure and summed stage timings."""
    timings: dict[str, float] = {}
    for rec in records:
        for stage, seconds in rec.get("timings", {}).items():
            timings[stage] = timings.get(stage, 0.0) + float(seconds)
    n_bytes = sum(int(r.get("l0_bytes_read", 0)) for r in records)
    failures = [(r["failure"], r.get("rule", "")) for r in records if r.get("failure")]
    failure = None
    if failures:
        first = min(failures, key=lambda f: (STAGES.index(f[0]["stage"]),
                                             _RULE_RANK.get(f[1], 2)))
        failure = Failure.from_dict(first[0])
    return ScanRun(scan, failure=failure, timings=timings, l0_bytes_read=n_bytes)


def _merged_extra(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for rec in records:
        merged.update(rec.get("extra", {}))
    return merged


def _finish(run: ScanRun, rule: str, record: str | Path, artifacts: Sequence[str | Path],
            extra: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholders for the artifacts of a failed scan, then the job's record."""
    if run.failure is not None:
        f = run.failure
        for path in artifacts:
            save_artifact(StageFailure(f.scan, f.stage, f.error, f.message), path)
    rec = {"scan": run.scan, "rule": rule,
           "failure": run.failure.to_dict() if run.failure else None,
           "timings": dict(run.clock.timings), "l0_bytes_read": run.l0_bytes_read,
           "extra": dict(extra)}
    write_json(record, rec)
    return rec


# -- the jobs ---------------------------------------------------------------------------------

def run_resolve(store: str, scan: int, config: CalibrationConfig, artifact: str,
                record: str) -> dict[str, Any]:
    """Rule resolve: the scan's metadata and its loads -> CalibrationLoadFull."""
    from calpipe.l0 import ReadLimits, open_session
    from calpipe.pipeline import load_next_calibration
    from calpipe.stages import resolve, snapshot_digests

    session = open_session(store, ReadLimits.from_config(config))
    run = ScanRun(scan)
    extra: dict[str, Any] = {}
    with run:
        data = run.stage("load", session.load_scan, scan, subscans=())
        run.l0_bytes_read += data.bytes_read
        cal = run.stage("load", session.load_calibration, scan, data.meta.lloadsn)
        run.l0_bytes_read += cal.bytes_read
        # issue 14: the next snapshot too (gain_interpolate, calibration_select)
        next_cal = run.stage("load", load_next_calibration, session, scan, cal.scan, config)
        if next_cal is not None:
            run.l0_bytes_read += next_cal.bytes_read
        load = run.stage("resolve", resolve, data, cal, config, next_cal)
        extra = {"snapshot_digests": snapshot_digests(cal, next_cal, load)}
        save_artifact(load, artifact)
    return _finish(run, "resolve", record, [artifact], extra)


def run_prepare(store: str, scan: int, config: CalibrationConfig, artifact: str,
                geometry: str, record: str) -> dict[str, Any]:
    """Rule prepare: the scan's metadata and OFF subscans -> PreparedData and ScanGeometry."""
    from calpipe.l0 import ReadLimits, open_session
    from calpipe.physics.reference import off_subscans
    from calpipe.stages import ScanGeometry, prepare

    session = open_session(store, ReadLimits.from_config(config))
    run = ScanRun(scan)
    extra: dict[str, Any] = {}
    with run:
        data = run.stage("load", session.load_scan, scan,
                         subscans=lambda meta: off_subscans(meta.sobsmode))
        run.l0_bytes_read += data.bytes_read
        extra = {"meta_digest": data.meta_digest,
                 "off_digests": {str(k): v for k, v in data.subscan_digests.items()}}
        prepared = run.stage("prepare", prepare, data, config)
        save_artifact(prepared, artifact)
        save_artifact(ScanGeometry.of(data), geometry)
    return _finish(run, "prepare", record, [artifact, geometry], extra)


def run_atmosphere(scan: int, config: CalibrationConfig, resolve_rec: str, prepare_rec: str,
                   resolve_art: str, prepare_art: str, geometry_art: str, artifact: str,
                   record: str) -> dict[str, Any]:
    """Rule atmosphere: artifacts of resolve + prepare -> AtmosphereResult (no L0 read)."""
    from calpipe.physics.atmosphere import AtmosphereResult  # noqa: F401 (artifact type)
    from calpipe.physics.loads import CalibrationLoadFull
    from calpipe.physics.reference import PreparedData
    from calpipe.pipeline import load_table
    from calpipe.stages import ScanGeometry, atmosphere

    upstream = [_read_json(resolve_rec), _read_json(prepare_rec)]
    run = upstream_run(scan, upstream)
    with run:
        if run.ok:
            load = _load(CalibrationLoadFull, resolve_art)
            prepared = _load(PreparedData, prepare_art)
            geometry = _load(ScanGeometry, geometry_art)
            table = load_table(config)  # ConfigError / OSError: run-level
            atm = run.stage("atmosphere", atmosphere, geometry, load, prepared, config, table)
            save_artifact(atm, artifact)
    return _finish(run, "atmosphere", record, [artifact], _merged_extra(upstream))


def run_skydiff(scan: int, config: CalibrationConfig, resolve_rec: str, prepare_rec: str,
                resolve_art: str, prepare_art: str, geometry_art: str, previous: str | None,
                history: str, artifact: str, record: str) -> dict[str, Any]:
    """Rule skydiff (issue 14): the previous scan's SKYDIFF history + this scan's OFFs -> this
    scan's history and differences (no L0 read). The first scan of a session has no previous
    history; a scan that failed upstream passes the history on unchanged. The record holds
    this job's own stage time only (the calibrate job adds it to the atmosphere record's)."""
    from calpipe.physics.loads import CalibrationLoadFull
    from calpipe.physics.reference import PreparedData
    from calpipe.physics.skydiff import SkyDiffResult, SkyHistory  # noqa: F401 (artifacts)
    from calpipe.stages import ScanGeometry, skydiff

    upstream = upstream_run(scan, [_read_json(resolve_rec), _read_json(prepare_rec)])
    run = ScanRun(scan, failure=upstream.failure)
    before = (_load(SkyHistory, previous) if previous
              else SkyHistory.empty(config.skydiff))
    after = before
    with run:
        if run.ok:
            load = _load(CalibrationLoadFull, resolve_art)
            prepared = _load(PreparedData, prepare_art)
            geometry = _load(ScanGeometry, geometry_art)
            after, diffs = run.stage("skydiff", skydiff, load, prepared, geometry, before,
                                     config)
            save_artifact(diffs, artifact)
    save_artifact(after, history)
    return _finish(run, "skydiff", record, [artifact], {})


def run_calibrate(store: str, scan: int, session_name: str, config: CalibrationConfig,
                  l1_store: str, resolve_art: str, prepare_art: str, atmosphere_art: str,
                  atmosphere_rec: str, status: str, skydiff_art: str | None = None,
                  skydiff_rec: str | None = None) -> ScanStatus:
    """Rule calibrate: the ON subscans -> T_A*, the L1 group (atomically), the scan status.
    With ``skydiff`` > 0 also the scan's SKYDIFF differences (artifact and record)."""
    from calpipe import l1
    from calpipe.l0 import ReadLimits, combine_digests, open_session
    from calpipe.physics.atmosphere import AtmosphereResult
    from calpipe.physics.loads import CalibrationLoadFull
    from calpipe.physics.reference import PreparedData
    from calpipe.physics.skydiff import SkyDiffResult
    from calpipe.stages import calibrate

    upstream = _read_json(atmosphere_rec)
    records = [upstream] + ([_read_json(skydiff_rec)] if skydiff_rec else [])
    run = upstream_run(scan, records)
    extra = _merged_extra([upstream])
    out = Path(l1_store)
    l1.ensure_store(out)
    result_status: ScanStatus | None = None
    with run:
        if run.ok:
            load = _load(CalibrationLoadFull, resolve_art)
            prepared = _load(PreparedData, prepare_art)
            atm = _load(AtmosphereResult, atmosphere_art)
            diffs = _load(SkyDiffResult, skydiff_art) if skydiff_art else None
            session = open_session(store, ReadLimits.from_config(config))
            # the ONs, and for otf-chopped scans their chop partners (per-dump reference)
            data = run.stage("load", session.load_scan, scan, subscans=prepared.read_index)
            run.l0_bytes_read += data.bytes_read
            result = run.stage("calibrate", calibrate, data, load, prepared, atm, config,
                               diffs)
            subscan_digests = {int(k): v for k, v in extra.get("off_digests", {}).items()}
            subscan_digests.update(data.subscan_digests)
            digests = {"scan": combine_digests(data.meta_digest, subscan_digests),
                       **extra.get("snapshot_digests", {})}
            del data
            attrs = {"provenance": scan_provenance(config, store, atm.table_model,
                                                   atm.table_digest, digests),
                     "timings_s": dict(run.clock.timings)}
            with l1.output_lock(out, shared=True):
                l1.remove_stale_partials(out, scan)
                run.stage("write", l1.write_scan, out, result, attrs)
            result_status = ScanStatus.calibrated(run, result, atm.pwv_mm, session_name)
    if result_status is None:
        with l1.output_lock(out, shared=True):
            l1.remove_stale_partials(out, scan)
            l1.remove_scan_group(out, scan)  # no stale group of an earlier, successful run
        result_status = ScanStatus.failed(run, session_name)
    write_json(status, result_status.to_dict())
    return result_status
