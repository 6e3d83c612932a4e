"""In-process orchestration (DESIGN 4.1): ``calibrate_single_scan`` and ``calibrate_store``.

``calibrate_store`` opens the L0 store once and runs a prefetch thread that loads scan N+1
(source data and its calibration snapshot) while the main thread processes scan N. A
semaphore with two permits bounds the raw data resident at once to two scans: the loader takes
a permit before it starts reading a scan, and the main thread returns it as soon as it has
dropped that scan's raw counts (after the calibrate stage, before the L1 write). A bounded
queue alone (Rust's ``sync_channel(1)``) would allow three: one processed, one queued and one
held by the loader while it blocks.

A ``CalibrationError`` in any stage is recorded for that scan and the loop goes on; any other
exception stops the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calpipe import __version__, l1
from calpipe.artifacts import atomic_write_text
from calpipe.config import CalibrationConfig
from calpipe.errors import CalibrationError, ConfigError, StoreError
from calpipe.l0 import CalibrationSnapshot, ScanData, Session, open_session
from calpipe.stages import (
    CalibrationResult,
    ScanGeometry,
    atmosphere,
    calibrate,
    prepare,
    resolve,
)

if TYPE_CHECKING:  # annotation only: importing it loads scipy.interpolate (~0.5 s per
    # Snakemake job that never touches a table: resolve, prepare, calibrate)
    from calpipe.atmosphere.table import AtmosphereTable

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.json"
SUMMARY_FILE = "run_summary.json"
LOCK_FILE = ".calpipe.lock"


@dataclass(frozen=True)
class Failure:
    """One failed scan, as written to failures.json (DESIGN 2.3)."""

    scan: int
    stage: str
    error: str
    message: str


@dataclass(frozen=True)
class ScanSummary:
    """One calibrated scan: the numbers the summary table and run summary show."""

    scan: int
    mode: str
    pwv_mm: float
    median_t_sys_k: float
    timings_s: dict[str, float]


@dataclass
class PipelineResult:
    successes: list[ScanSummary] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: (event, scan, seconds since start); events: load_start, load_end, process_start,
    #: release (raw data dropped, permit returned), process_end
    timeline: list[tuple[str, int, float]] = field(default_factory=list)
    ignored_groups: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all calibrated; 2 some failed; 1 nothing succeeded."""
        if not self.failures:
            return 0 if self.successes else 1
        return 2 if self.successes else 1


def load_table(config: CalibrationConfig) -> AtmosphereTable:
    """The atmosphere table named in the configuration, else the one shipped with calpipe."""
    from calpipe.atmosphere import tableio

    if config.atmosphere_table is None:
        return tableio.load_default_table()
    return tableio.load_table(config.atmosphere_table)


class StageClock:
    """Times each stage and remembers which one is running (for failure records)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.stage = "load"

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.stage = stage
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


@dataclass
class LoadedScan:
    scan: int
    data: ScanData | None = None
    cal: CalibrationSnapshot | None = None
    error: BaseException | None = None
    load_seconds: float = 0.0


def load_scan_and_calibration(session: Session, scan: int) -> tuple[ScanData,
                                                                    CalibrationSnapshot]:
    data = session.load_scan(scan)
    cal = session.load_calibration(scan, data.meta.lloadsn)
    return data, cal


def provenance(config: CalibrationConfig, store: Path, table: AtmosphereTable) -> dict[str, Any]:
    """Run-level provenance; per-scan digests are added by ``process_scan``."""
    return {
        "calpipe_version": __version__,
        "config_digest": config.digest,
        "config": config.to_dict(),
        "input_store": str(Path(store).resolve()),
        "atmosphere_table": {"model": table.model, "digest": table.digest,
                             "path": config.atmosphere_table or "default (shipped)"},
    }


@dataclass
class ComputedScan:
    """A calibrated scan waiting to be written (its raw counts already released)."""

    result: CalibrationResult
    extra_attrs: dict[str, Any]
    pwv_mm: float
    clock: StageClock


def compute_scan(loaded: LoadedScan, config: CalibrationConfig, table: AtmosphereTable,
                 run_provenance: dict[str, Any], clock: StageClock,
                 release: Callable[[], None] | None = None) -> ComputedScan:
    """resolve -> prepare -> atmosphere -> calibrate for one loaded scan.

    The calibration snapshot is dropped right after resolve and the source counts right after
    calibrate; ``release`` is then called (the prefetch loop returns its permit there).
    """
    data, cal = loaded.data, loaded.cal
    assert data is not None and cal is not None
    loaded.cal = None
    with clock("resolve"):
        load = resolve(data, cal, config)
    cal_digest, cal_scan = cal.content_digest, cal.scan
    del cal  # the loads are reduced to [C, R, A]: drop the raw snapshot now
    with clock("prepare"):
        prepared = prepare(data, config)
    with clock("atmosphere"):
        atm = atmosphere(ScanGeometry.of(data), load, prepared, config, table)
    with clock("calibrate"):
        result = calibrate(data, load, prepared, atm, config)
    digests = {"scan": data.content_digest, "calibration": cal_digest,
               "calibration_scan": cal_scan}
    loaded.data = None
    del data, prepared
    if release is not None:
        release()
    timings = dict(clock.timings)
    timings["load"] = loaded.load_seconds
    extra = {"provenance": {**run_provenance, "content_digest": digests,
                            "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
             "timings_s": timings}
    return ComputedScan(result, extra, float(atm.pwv_mm.mean()), clock)


def write_computed(out: Path, computed: ComputedScan) -> ScanSummary:
    """Stage "write": the L1 group (atomically), then the scan's summary row.

    The ``timings_s`` attribute in L1 holds the stages before the write; the run summary
    also has the write time.
    """
    clock = computed.clock
    with clock("write"):
        l1.write_scan(out, computed.result, computed.extra_attrs)
    timings = dict(computed.extra_attrs["timings_s"])
    timings["write"] = clock.timings["write"]
    result = computed.result
    t_sys = result.t_sys[np.isfinite(result.t_sys)]
    return ScanSummary(scan=result.scan, mode=result.mode, pwv_mm=computed.pwv_mm,
                       median_t_sys_k=float(np.median(t_sys)) if t_sys.size else float("nan"),
                       timings_s=timings)


def process_scan(loaded: LoadedScan, out: Path, config: CalibrationConfig,
                 table: AtmosphereTable, run_provenance: dict[str, Any], clock: StageClock,
                 release: Callable[[], None] | None = None) -> ScanSummary:
    """All stages of one loaded scan, in this thread (compute_scan + write_computed)."""
    return write_computed(out, compute_scan(loaded, config, table, run_provenance, clock,
                                            release))


@contextlib.contextmanager
def output_lock(out: Path, *, shared: bool = False) -> Iterator[None]:
    """Refuse a second run writing the same output (flock on OUT/.calpipe.lock).

    An in-process run holds the lock exclusively for its whole run. Snakemake jobs, which
    write different scan groups of one store concurrently, hold it shared while they write:
    they coexist with each other, and an in-process run and a workflow never interleave.
    """
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


def _failure(scan: int, stage: str, exc: BaseException) -> Failure:
    return Failure(scan=scan, stage=stage, error=type(exc).__name__, message=str(exc))


def write_failures(path: Path, failures: Sequence[Failure]) -> None:
    rows = [asdict(f) for f in sorted(failures, key=lambda f: f.scan)]
    atomic_write_text(path, json.dumps(rows, indent=2) + "\n")


def write_run_summary(path: Path, result: PipelineResult, extra: dict[str, Any]) -> None:
    summary = {
        **extra,
        "n_scans": len(result.successes) + len(result.failures),
        "n_succeeded": len(result.successes),
        "n_failed": len(result.failures),
        "exit_code": result.exit_code,
        "ignored_groups": result.ignored_groups,
        "scans": [asdict(s) for s in sorted(result.successes, key=lambda s: s.scan)],
        "failures": [asdict(f) for f in sorted(result.failures, key=lambda f: f.scan)],
    }
    atomic_write_text(path, json.dumps(summary, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


ProgressCallback = Callable[[str, int, Any], None]  # (event, scan, payload)


def calibrate_store(store: str | Path, out: str | Path,
                    config: CalibrationConfig = CalibrationConfig(), *,
                    scans: Sequence[int] | None = None, table: AtmosphereTable | None = None,
                    progress: ProgressCallback | None = None) -> PipelineResult:
    """Calibrate every source scan of ``store`` into the L1 store ``out`` (prefetch mode).

    Writes ``failures.json`` (always, possibly empty) and ``run_summary.json`` into ``out``.
    """
    store, out = Path(store), Path(out)
    t_start = time.perf_counter()
    session = open_session(store)
    available = session.source_scans()
    if scans is not None:
        missing = sorted(set(scans) - set(session.scans()))
        if missing:
            raise ConfigError(f"requested scan(s) {missing} are not in {store}")
        todo = [n for n in available if n in set(scans)]
    else:
        todo = available
    table = table if table is not None else load_table(config)
    run_prov = provenance(config, store, table)
    result = PipelineResult(ignored_groups=list(session.ignored_groups))
    with output_lock(out):
        l1.init_store(out)
        _run_loop(session, todo, out, config, table, run_prov, result, progress)
        write_failures(out / FAILURES_FILE, result.failures)
        write_run_summary(out / SUMMARY_FILE, result, {
            "mode": "in-process", "calpipe_version": __version__, "input_store": str(store),
            "output_store": str(out), "config_digest": config.digest,
            "wall_seconds": time.perf_counter() - t_start,
        })
    return result


def _run_loop(session: Session, todo: list[int], out: Path, config: CalibrationConfig,
              table: AtmosphereTable, run_prov: dict[str, Any], result: PipelineResult,
              progress: ProgressCallback | None) -> None:
    """Three threads: prefetch (scan N+1) -> compute (scan N) -> write (scan N-1).

    Raw data: at most two scans (two permits, see the module docstring). Outputs: at most two
    scans (the one being written and the one waiting for the writer).
    """
    permits = threading.Semaphore(2)  # raw data of at most two scans resident
    handoff: queue.Queue[LoadedScan | None] = queue.Queue()
    write_slot = threading.Semaphore(1)  # one scan being written at a time
    to_write: queue.Queue[ComputedScan | None] = queue.Queue()
    written: queue.Queue[tuple[int, ScanSummary | None, BaseException | None]] = queue.Queue()
    stop = threading.Event()
    t0 = time.perf_counter()

    def mark(event: str, scan: int) -> None:
        result.timeline.append((event, scan, time.perf_counter() - t0))

    def loader() -> None:
        for scan in todo:
            permits.acquire()
            if stop.is_set():
                break
            item = LoadedScan(scan)
            mark("load_start", scan)
            t = time.perf_counter()
            try:
                item.data, item.cal = load_scan_and_calibration(session, scan)
            except BaseException as exc:  # handed to the main thread, which decides
                item.error = exc
            item.load_seconds = time.perf_counter() - t
            mark("load_end", scan)
            handoff.put(item)
        handoff.put(None)

    def writer() -> None:
        while (computed := to_write.get()) is not None:
            scan = computed.result.scan
            try:
                written.put((scan, write_computed(out, computed), None))
            except BaseException as exc:  # judged by the main thread
                written.put((scan, None, exc))
            finally:
                del computed
                mark("process_end", scan)
                write_slot.release()

    def collect(block: bool = False) -> None:
        """Book finished writes (in the main thread); re-raise fatal write errors."""
        while True:
            try:
                scan, summary, exc = written.get(block=block, timeout=None)
            except queue.Empty:
                return
            block = False
            if isinstance(exc, CalibrationError):
                _record_failure(result, progress, scan, "write", exc)
            elif exc is not None:
                raise exc
            else:
                assert summary is not None
                result.successes.append(summary)
                if progress:
                    progress("done", scan, summary)

    threads = [threading.Thread(target=loader, name="calpipe-prefetch", daemon=True),
               threading.Thread(target=writer, name="calpipe-writer", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while (item := handoff.get()) is not None:
            released = threading.Event()

            def release(ev: threading.Event = released, scan: int = item.scan) -> None:
                if not ev.is_set():
                    ev.set()
                    mark("release", scan)
                    permits.release()

            clock = StageClock()
            if progress:
                progress("start", item.scan, None)
            mark("process_start", item.scan)
            try:
                if item.error is not None:
                    raise item.error
                computed = compute_scan(item, config, table, run_prov, clock, release)
            except CalibrationError as exc:
                stage = "load" if item.error is not None else clock.stage
                item.data = item.cal = None
                release()
                mark("process_end", item.scan)
                _record_failure(result, progress, item.scan, stage, exc)
            else:
                write_slot.acquire()  # wait until the previous scan is written
                to_write.put(computed)
                del computed
            finally:
                item.data = item.cal = None
                release()
            collect()
        to_write.put(None)
        threads[1].join()
        collect()
    except BaseException:
        stop.set()
        permits.release()
        to_write.put(None)
        raise
    threads[0].join()


def _record_failure(result: PipelineResult, progress: ProgressCallback | None, scan: int,
                    stage: str, exc: CalibrationError) -> None:
    failure = _failure(scan, stage, exc)
    result.failures.append(failure)
    log.warning("scan %d failed in stage %s: %s", scan, stage, exc)
    if progress:
        progress("failed", scan, failure)


def calibrate_single_scan(store: str | Path, scan: int, out: str | Path,
                          config: CalibrationConfig = CalibrationConfig(), *,
                          table: AtmosphereTable | None = None) -> ScanSummary:
    """Calibrate one scan in process (all stages); raises CalibrationError on bad data."""
    store, out = Path(store), Path(out)
    session = open_session(store)
    table = table if table is not None else load_table(config)
    with output_lock(out):
        l1.init_store(out)
        loaded = LoadedScan(scan)
        t = time.perf_counter()
        loaded.data, loaded.cal = load_scan_and_calibration(session, scan)
        loaded.load_seconds = time.perf_counter() - t
        return process_scan(loaded, out, config, table, provenance(config, store, table),
                            StageClock())
