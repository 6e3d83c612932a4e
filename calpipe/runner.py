"""One scan through the stages, the same in both orchestration modes (issue 11).

This module is the only implementation of:

- running a stage of one scan, timing it, and turning a per-scan fault into that scan's
  :class:`Failure` (:class:`ScanRun`); later stages of a failed scan are skipped;
- the scan's summary row (:class:`ScanStatus`), its provenance (:func:`scan_provenance`);
- the run's ``failures.json`` and ``run_summary.json`` (:func:`write_run_outputs`) and the
  exit-code rule (:func:`exit_code`).

``calpipe.pipeline`` (in-process, prefetch) runs all stages of a scan in one ``ScanRun``;
each Snakemake job (``calpipe.workflow.jobs``) runs one or two stages in a ``ScanRun`` seeded
with the upstream jobs' failure and timings. The two modes therefore write the same records.

Which faults are per-scan: a ``CalibrationError`` (data), and any other ``Exception`` raised
while a scan's data are read, validated or calibrated (a reader or physics bug triggered by
one scan's data must not cost the other scans). Run-level (re-raised): ``ConfigError``,
``StoreError`` (the whole store or output is unusable) and ``OSError`` (infrastructure: disk
full, read-only output, a lost mount; the workflow's ``--retries`` apply to them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from calpipe import __version__
from calpipe.artifacts import atomic_write_text
from calpipe.errors import CalibrationError, CalpipeError
from calpipe.schema import (
    FAILURES_FILE,
    RUN_SUMMARY_FORMAT,
    RUN_SUMMARY_VERSION,
    STAGES,
    SUMMARY_FILE,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """One failed scan, as written to failures.json (DESIGN 2.3)."""

    scan: int
    stage: str
    error: str
    message: str

    @classmethod
    def of(cls, scan: int, stage: str, exc: BaseException) -> Failure:
        message = str(exc)
        if not isinstance(exc, CalibrationError):  # an unexpected error: say where it was
            message = f"scan {scan}, stage {stage}: unexpected {type(exc).__name__}: {exc}"
        return cls(scan=int(scan), stage=stage, error=type(exc).__name__, message=message)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Failure:
        return cls(int(value["scan"]), str(value["stage"]), str(value["error"]),
                   str(value["message"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_scan_fault(exc: BaseException) -> bool:
    """True for a fault that fails only this scan (see the module docstring)."""
    if isinstance(exc, CalibrationError):
        return True
    if isinstance(exc, CalpipeError | OSError):
        return False
    return isinstance(exc, Exception)


class StageClock:
    """Seconds per stage (summed when a stage runs in pieces) and the stage now running."""

    def __init__(self, timings: Mapping[str, float] | None = None) -> None:
        self.timings: dict[str, float] = dict(timings or {})
        self.stage = "load"

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.stage = stage
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


class _StageFailed(Exception):
    """Internal: unwinds a ``with ScanRun`` block after a stage recorded a failure."""


class ScanRun:
    """The stages of one scan: ``with run: x = run.stage("resolve", resolve, ...)``.

    ``stage`` times the call; a per-scan fault becomes ``run.failure`` and leaves the ``with``
    block (the later stages are not run); a run-level fault propagates. A run seeded with an
    upstream failure (a later Snakemake job of a failed scan) runs no stage at all.
    """

    def __init__(self, scan: int, *, failure: Failure | None = None,
                 timings: Mapping[str, float] | None = None, l0_bytes_read: int = 0) -> None:
        self.scan = int(scan)
        self.failure = failure
        self.clock = StageClock(timings)
        #: decoded bytes of L0 arrays read for this scan (all jobs of the scan, summed)
        self.l0_bytes_read = int(l0_bytes_read)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def __enter__(self) -> ScanRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        return exc_type is _StageFailed

    def stage(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        if self.failure is not None:  # an earlier stage (or upstream job) failed: skip
            raise _StageFailed
        try:
            with self.clock(name):
                return fn(*args, **kwargs)
        except BaseException as exc:
            if not is_scan_fault(exc):
                raise
            self.fail(name, exc)
            raise _StageFailed from exc

    def fail(self, stage: str, exc: BaseException) -> None:
        """Record ``exc`` as this scan's failure in ``stage``."""
        self.failure = Failure.of(self.scan, stage, exc)
        if isinstance(exc, CalibrationError):
            log.warning("scan %d failed in stage %s: %s", self.scan, stage, exc)
        else:
            log.error("scan %d failed in stage %s with an unexpected error", self.scan, stage,
                      exc_info=exc)


# -- per-scan records -------------------------------------------------------------------------

@dataclass(frozen=True)
class ScanStatus:
    """The outcome of one scan: a row of run_summary.json (and a workflow status file)."""

    scan: int
    ok: bool
    failure: Failure | None = None
    mode: str | None = None
    pwv_mm: float | None = None
    median_t_sys_k: float | None = None
    calibration_scan: int | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    session: str = ""
    l0_bytes_read: int = 0

    @classmethod
    def failed(cls, run: ScanRun, session: str = "") -> ScanStatus:
        assert run.failure is not None
        return cls(scan=run.scan, ok=False, failure=run.failure,
                   timings_s=_rounded(run.clock.timings), session=session,
                   l0_bytes_read=run.l0_bytes_read)

    @classmethod
    def calibrated(cls, run: ScanRun, result: Any, pwv_mm: np.ndarray,
                   session: str = "") -> ScanStatus:
        """From a ``CalibrationResult`` and the fitted pwv [Rp, Ap] (mm)."""
        t_sys = result.t_sys[np.isfinite(result.t_sys)]
        return cls(scan=run.scan, ok=True, mode=str(result.mode),
                   pwv_mm=float(np.mean(pwv_mm)),
                   median_t_sys_k=float(np.median(t_sys)) if t_sys.size else None,
                   calibration_scan=int(result.attrs.get("calibration_scan", -1)),
                   timings_s=_rounded(run.clock.timings), session=session,
                   l0_bytes_read=run.l0_bytes_read)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failure"] = self.failure.to_dict() if self.failure else None
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ScanStatus:
        values = dict(value)
        failure = values.pop("failure", None)
        return cls(failure=Failure.from_dict(failure) if failure else None, **values)


def _rounded(timings: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in timings.items()}


def scan_provenance(config: Any, store: str | Path, table_model: str, table_digest: str,
                    digests: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance attribute of an L1 scan group (DESIGN 2.2), in both modes."""
    return {
        "calpipe_version": __version__,
        "config_digest": config.digest,
        "config": config.to_dict(),
        "input_store": str(Path(store).resolve()),
        "atmosphere_table": {"model": table_model, "digest": table_digest,
                             "path": config.atmosphere_table or "default (shipped)"},
        "content_digest": dict(digests),
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def reported_groups(session: Any) -> list[str]:
    """Groups no scan run accounts for, for run_summary.json ``ignored_groups``: names that
    are not ``scan_`` + digits, and scan-like directories that are not valid groups unless
    their scan is a science scan (which then fails and is in failures.json). Both modes."""
    science = set(session.source_scans())
    return list(session.ignored_groups) + [
        f"{g.path} ({g.reason})" for g in session.invalid_groups()
        if g.scan is None or g.scan not in science]


# -- the run ----------------------------------------------------------------------------------

def exit_code(n_succeeded: int, n_failed: int) -> int:
    """0 all calibrated; 2 some failed, some calibrated; 1 nothing calibrated (or no scan)."""
    if n_failed:
        return 2 if n_succeeded else 1
    return 0 if n_succeeded else 1


def failure_message(n_failed: int, n_scans: int) -> str:
    """The closing line of a run (both modes)."""
    if n_scans == 0:
        return "no science scans to calibrate"
    if n_failed:
        return f"{n_failed} of {n_scans} scans failed, see failures.json"
    return f"all {n_scans} scans calibrated"


def run_summary(statuses: Sequence[ScanStatus], *, orchestration: str, input_store: str,
                output_store: str, config_digest: str, wall_seconds: float,
                ignored_groups: Sequence[str] = (), removed_groups: Sequence[str] = (),
                ) -> dict[str, Any]:
    """The content of run_summary.json: one schema for both modes.

    Only ``orchestration``, ``wall_seconds``, ``utc``, the store paths, and the ``timings_s``
    and ``l0_bytes_read`` of each scan may differ between an in-process and a Snakemake run of
    the same session and configuration.
    """
    ordered = sorted(statuses, key=lambda s: (s.scan, s.session))
    ok = [s for s in ordered if s.ok]
    failed = [s for s in ordered if not s.ok]
    totals: dict[str, float] = {}
    for s in ordered:
        for stage, seconds in s.timings_s.items():
            totals[stage] = round(totals.get(stage, 0.0) + seconds, 6)
    return {
        "format": RUN_SUMMARY_FORMAT,
        "version": RUN_SUMMARY_VERSION,
        "orchestration": orchestration,
        "calpipe_version": __version__,
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input_store": str(input_store),
        "output_store": str(output_store),
        "config_digest": config_digest,
        "wall_seconds": round(wall_seconds, 3),
        "n_scans": len(ordered),
        "n_succeeded": len(ok),
        "n_failed": len(failed),
        "exit_code": exit_code(len(ok), len(failed)),
        "message": failure_message(len(failed), len(ordered)),
        "ignored_groups": sorted(ignored_groups),
        "removed_groups": sorted(removed_groups),
        "pwv_mm": _overview([s.pwv_mm for s in ok]),
        "median_t_sys_k": _overview([s.median_t_sys_k for s in ok]),
        "stage_seconds_total": totals,
        "l0_bytes_read_total": int(sum(s.l0_bytes_read for s in ordered)),
        "scans": [s.to_dict() for s in ordered],
        "failures": [dict(s.failure.to_dict(), **({"session": s.session} if s.session else {}))
                     for s in failed if s.failure],
    }


def _overview(values: Sequence[float | None]) -> dict[str, float] | None:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not v.size:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def failure_rows(statuses: Sequence[ScanStatus], *, with_session: bool = False
                 ) -> list[dict[str, Any]]:
    """failures.json rows (DESIGN 2.3), sorted by scan; ``session`` added on request."""
    rows = []
    for s in sorted(statuses, key=lambda s: (s.scan, s.session)):
        if s.failure is not None:
            row = s.failure.to_dict()
            if with_session:
                row["session"] = s.session
            rows.append(row)
    return rows


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(Path(path), json.dumps(value, indent=1, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def write_run_outputs(directory: str | Path, statuses: Sequence[ScanStatus],
                      summary: Mapping[str, Any], *, with_session: bool = False) -> None:
    """failures.json (always, possibly empty) then run_summary.json into ``directory``."""
    directory = Path(directory)
    write_json(directory / FAILURES_FILE, failure_rows(statuses, with_session=with_session))
    write_json(directory / SUMMARY_FILE, summary)


def invalidate_run_outputs(directory: str | Path) -> None:
    """Remove the previous run's failures.json and run_summary.json when a run starts, so
    that an interrupted run never leaves them describing an older run."""
    for name in (FAILURES_FILE, SUMMARY_FILE):
        with contextlib.suppress(FileNotFoundError):
            (Path(directory) / name).unlink()


def read_run_summary(path: str | Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
