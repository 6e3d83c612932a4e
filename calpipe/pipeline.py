"""In-process orchestration (DESIGN 4.1): ``calibrate_single_scan`` and ``calibrate_store``.

``calibrate_store`` opens the L0 store once and runs a prefetch thread that loads scan N+1
(source data and its calibration snapshot) while the main thread processes scan N, and a writer
thread that writes scan N-1. A semaphore with two permits bounds the raw data resident at once
to two scans: the loader takes a permit before it starts reading a scan, and the main thread
returns it as soon as it has dropped that scan's raw counts (after the calibrate stage, before
the L1 write). A bounded queue alone (Rust's ``sync_channel(1)``) would allow three: one
processed, one queued and one held by the loader while it blocks.

Every scan runs in a :class:`calpipe.runner.ScanRun`, the same per-scan runner the Snakemake
jobs use: a per-scan fault is recorded for that scan and the loop goes on; a run-level fault
(store, configuration, disk) stops the run.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from calpipe import l1
from calpipe.config import CalibrationConfig
from calpipe.errors import ConfigError, MissingLoadError
from calpipe.l0 import CalibrationSnapshot, ReadLimits, ScanData, Session, open_session
from calpipe.physics.skydiff import SkyHistory
from calpipe.products import CalibrationResult
from calpipe.runner import (
    Failure,
    ScanRun,
    ScanStatus,
    invalidate_run_outputs,
    is_scan_fault,
    reported_groups,
    run_summary,
    scan_provenance,
    write_run_outputs,
)
from calpipe.schema import FAILURES_FILE, LOCK_FILE, SUMMARY_FILE  # noqa: F401 (re-export)
from calpipe.stages import (
    ScanGeometry,
    atmosphere,
    calibrate,
    prepare,
    resolve,
    skydiff,
    snapshot_digests,
)

if TYPE_CHECKING:  # annotation only: importing it loads scipy.interpolate
    from calpipe.atmosphere.table import AtmosphereTable
    from calpipe.physics.loads import CalibrationLoadFull
    from calpipe.physics.reference import PreparedData

log = logging.getLogger(__name__)

#: kept for callers of the first release
output_lock = l1.output_lock


@dataclass
class PipelineResult:
    """The statuses of every scan of a run (in scan order once the run is over)."""

    statuses: list[ScanStatus] = field(default_factory=list)
    #: (event, scan, seconds since start); events: load_start, load_end, process_start,
    #: release (raw data dropped, permit returned), process_end
    timeline: list[tuple[str, int, float]] = field(default_factory=list)
    ignored_groups: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def successes(self) -> list[ScanStatus]:
        return [s for s in self.statuses if s.ok]

    @property
    def failures(self) -> list[Failure]:
        return [s.failure for s in self.statuses if s.failure is not None]

    @property
    def exit_code(self) -> int:
        """0 all calibrated; 2 some failed; 1 nothing succeeded (calpipe.runner.exit_code)."""
        from calpipe.runner import exit_code

        return exit_code(len(self.successes), len(self.failures))


def load_table(config: CalibrationConfig) -> AtmosphereTable:
    """The atmosphere table named in the configuration, else the one shipped with calpipe."""
    from calpipe.atmosphere import tableio

    if config.atmosphere_table is None:
        return tableio.load_default_table()
    return tableio.load_table(config.atmosphere_table)


@dataclass
class LoadedScan:
    scan: int
    data: ScanData | None = None
    cal: CalibrationSnapshot | None = None
    next_cal: CalibrationSnapshot | None = None  # gain_interpolate (issue 14)
    error: BaseException | None = None
    load_seconds: float = 0.0
    #: SKYDIFF (issue 14): when the full read failed, what the workflow's resolve and prepare
    #: jobs still compute from their partial reads (see :func:`skydiff_inputs`)
    sky_inputs: tuple[CalibrationLoadFull, PreparedData, ScanGeometry] | None = None


@dataclass
class SkyChain:
    """The SKYDIFF history carried from scan to scan, in scan order (issue 14)."""

    history: SkyHistory


def skydiff_inputs(session: Session, scan: int, config: CalibrationConfig
                   ) -> tuple[CalibrationLoadFull, PreparedData, ScanGeometry] | None:
    """The resolve and prepare results of a scan whose full read failed, from the reads the
    Snakemake resolve job (metadata, loads) and prepare job (metadata, OFF subscans) make;
    None when those fail too. A scan with an unreadable ON subscan thus adds its OFFs to the
    SKYDIFF history in both modes (the workflow's skydiff job never reads the ONs)."""
    from calpipe.physics.reference import off_subscans

    try:
        meta = session.load_scan(scan, subscans=())
        cal = session.load_calibration(scan, meta.meta.lloadsn)
        load = resolve(meta, cal, config, load_next_calibration(session, scan, cal.scan, config))
        offs = session.load_scan(scan, subscans=lambda m: off_subscans(m.sobsmode).tolist())
        return load, prepare(offs, config), ScanGeometry.of(offs)
    except Exception as exc:
        if not is_scan_fault(exc):
            raise
        return None


def load_scan_and_calibration(session: Session, scan: int) -> tuple[ScanData,
                                                                    CalibrationSnapshot]:
    data = session.load_scan(scan)
    cal = session.load_calibration(scan, data.meta.lloadsn)
    return data, cal


def load_next_calibration(session: Session, scan: int, cal_scan: int,
                          config: CalibrationConfig) -> CalibrationSnapshot | None:
    """The next calibration snapshot when ``gain_interpolate`` or ``calibration_select:
    nearest`` asks for it (issue 14); None when not asked, or for ``nearest`` when there is
    none (the lloadsn snapshot is then the nearest); MissingLoadError for gain_interpolate."""
    if not config.wants_next_calibration:
        return None
    try:
        nxt = session.next_calibration_scan(scan, cal_scan)
    except MissingLoadError:
        if config.gain_interpolate:
            raise
        return None
    return session.load_calibration(nxt, None)


@dataclass
class ComputedScan:
    """A calibrated scan waiting to be written (its raw counts already released)."""

    run: ScanRun
    result: CalibrationResult
    extra_attrs: dict[str, Any]
    pwv_mm: Any


def compute_scan(loaded: LoadedScan, run: ScanRun, config: CalibrationConfig,
                 table: AtmosphereTable, store: Path,
                 release: Callable[[], None] | None = None,
                 sky: SkyChain | None = None) -> ComputedScan | None:
    """resolve -> prepare (-> skydiff) -> atmosphere -> calibrate for one loaded scan (None if
    it failed).

    The calibration snapshot is dropped right after resolve and the source counts right after
    calibrate; ``release`` is then called (the prefetch loop returns its permit there).
    ``sky`` (``skydiff`` > 0): the SKYDIFF history, updated by stage "skydiff" right after
    prepare, so a scan that fails later still adds its OFFs (as in the workflow).
    """
    data, cal, next_cal = loaded.data, loaded.cal, loaded.next_cal
    loaded.data = loaded.cal = loaded.next_cal = None
    try:
        with run:
            if loaded.error is not None:
                if sky is not None and loaded.sky_inputs is not None:
                    with contextlib.suppress(Exception):  # as the workflow's skydiff job
                        sky.history = skydiff(*loaded.sky_inputs, sky.history, config)[0]
                run.clock.timings["load"] = loaded.load_seconds
                run.stage("load", _reraise, loaded.error)
            assert data is not None and cal is not None
            run.clock.timings["load"] = loaded.load_seconds
            run.l0_bytes_read += data.bytes_read + cal.bytes_read
            if next_cal is not None:
                run.l0_bytes_read += next_cal.bytes_read
            load = run.stage("resolve", resolve, data, cal, config, next_cal)
            digests = {"scan": data.content_digest,
                       **snapshot_digests(cal, next_cal, load)}
            del cal, next_cal  # the loads are reduced to [C, R, A]: drop the snapshots
            prepared = run.stage("prepare", prepare, data, config)
            geometry = ScanGeometry.of(data)
            diffs = None
            if sky is not None:
                sky.history, diffs = run.stage("skydiff", skydiff, load, prepared, geometry,
                                               sky.history, config)
            atm = run.stage("atmosphere", atmosphere, geometry, load, prepared, config, table)
            result = run.stage("calibrate", calibrate, data, load, prepared, atm, config,
                               diffs)
            del data, prepared
            # the table the atmosphere stage used (a sky table, or the zenith table), as the
            # Snakemake calibrate job records it: from the AtmosphereResult
            extra = {"provenance": scan_provenance(config, store, atm.table_model,
                                                   atm.table_digest, digests),
                     "timings_s": dict(run.clock.timings)}
            return ComputedScan(run, result, extra, atm.pwv_mm)
        return None
    finally:
        if release is not None:
            release()


def _reraise(exc: BaseException) -> None:
    raise exc


def write_computed(out: Path, computed: ComputedScan) -> ScanStatus:
    """Stage "write": the L1 group (atomically), then the scan's status.

    The ``timings_s`` attribute in L1 holds the stages before the write; the run summary
    also has the write time.
    """
    run = computed.run
    with run:
        run.stage("write", l1.write_scan, out, computed.result, computed.extra_attrs)
        return ScanStatus.calibrated(run, computed.result, computed.pwv_mm)
    l1.remove_scan_group(out, run.scan)
    return ScanStatus.failed(run)


ProgressCallback = Callable[[str, int, Any], None]  # (event, scan, payload)


def select_scans(session: Session, scans: Sequence[int] | None) -> list[int]:
    """The source scans to calibrate: all, or the requested ones (ConfigError if absent)."""
    available = session.source_scans()
    if scans is None:
        return available
    missing = sorted(set(scans) - set(session.scans()))
    if missing:
        raise ConfigError(f"requested scan(s) {missing} are not in {session.path}")
    wanted = set(scans)
    return [n for n in available if n in wanted]


def calibrate_store(store: str | Path, out: str | Path,
                    config: CalibrationConfig = CalibrationConfig(), *,
                    scans: Sequence[int] | None = None, table: AtmosphereTable | None = None,
                    progress: ProgressCallback | None = None,
                    existing: str = "refuse") -> PipelineResult:
    """Calibrate every source scan of ``store`` into the L1 store ``out`` (prefetch mode).

    Writes ``failures.json`` (always, possibly empty) and ``run_summary.json`` into ``out``.
    The store then describes this run: the group of a scan that fails now is removed, and
    (when all scans are calibrated, ``scans`` None) so are groups of scans that are no longer
    in the input. Groups calibrated with other options are refused unless ``existing`` is
    ``overwrite`` (remove them) or ``add`` (keep them) - see :func:`calpipe.l1.check_existing`.
    """
    if existing not in ("refuse", "overwrite", "add"):
        raise ConfigError(f"existing must be refuse, overwrite or add, not {existing!r}")
    store, out = Path(store), Path(out)
    t_start = time.perf_counter()
    session = open_session(store, ReadLimits.from_config(config))
    todo = select_scans(session, scans)
    table = table if table is not None else load_table(config)
    result = PipelineResult(ignored_groups=reported_groups(session))
    with l1.output_lock(out):
        l1.init_store(out)
        invalidate_run_outputs(out)
        removed = l1.check_existing(out, config.digest, existing)
        if scans is None:  # a full run: groups of scans no longer in the input go
            gone = sorted(set(l1.list_scans(out)) - set(todo))
            for scan in gone:
                l1.remove_scan_group(out, scan)
            removed += gone
        _run_loop(session, todo, out, config, table, result, progress)
        result.statuses.sort(key=lambda s: s.scan)
        result.summary = run_summary(
            result.statuses, orchestration="in-process", input_store=str(store),
            output_store=str(out), config_digest=config.digest,
            wall_seconds=time.perf_counter() - t_start,
            ignored_groups=result.ignored_groups,
            removed_groups=[f"scan_{n:06d}" for n in sorted(set(removed))])
        write_run_outputs(out, result.statuses, result.summary)
    return result


def _run_loop(session: Session, todo: list[int], out: Path, config: CalibrationConfig,
              table: AtmosphereTable, result: PipelineResult,
              progress: ProgressCallback | None) -> None:
    """Three threads: prefetch (scan N+1) -> compute (scan N) -> write (scan N-1).

    Raw data: at most two scans (two permits, see the module docstring). Outputs: at most two
    scans (the one being written and the one waiting for the writer). The main thread never
    waits on a dead thread: every wait polls the producer's liveness (``_get``).
    """
    store = Path(session.path)
    permits = threading.Semaphore(2)  # raw data of at most two scans resident
    handoff: queue.Queue[LoadedScan | _LoaderDied | None] = queue.Queue()
    write_slot = threading.Semaphore(1)  # one scan being written at a time
    to_write: queue.Queue[ComputedScan | None] = queue.Queue()
    written: queue.Queue[tuple[ScanStatus | None, BaseException | None]] = queue.Queue()
    stop = threading.Event()
    t0 = time.perf_counter()
    # SKYDIFF (issue 14): the main thread computes the scans in scan order (todo is sorted);
    # the history goes from one to the next
    sky = SkyChain(SkyHistory.empty(config.skydiff)) if config.skydiff else None

    def mark(event: str, scan: int) -> None:
        result.timeline.append((event, scan, time.perf_counter() - t0))

    def loader() -> None:
        died: BaseException | None = None
        try:
            for scan in todo:
                permits.acquire()
                if stop.is_set():
                    break
                item = LoadedScan(scan)
                mark("load_start", scan)
                t = time.perf_counter()
                try:
                    item.data, item.cal = load_scan_and_calibration(session, scan)
                    item.next_cal = load_next_calibration(session, scan, item.cal.scan,
                                                          config)
                except BaseException as exc:  # handed to the main thread, which decides
                    item.error = exc
                    item.data = item.cal = item.next_cal = None
                item.load_seconds = time.perf_counter() - t
                if item.error is not None and config.skydiff and is_scan_fault(item.error):
                    item.sky_inputs = skydiff_inputs(session, scan, config)
                mark("load_end", scan)
                handoff.put(item)
        except BaseException as exc:  # the thread itself failed: the run must not look done
            died = exc
        finally:
            handoff.put(_LoaderDied(died) if died is not None else None)

    def writer() -> None:
        while (computed := to_write.get()) is not None:
            scan = computed.run.scan
            try:
                written.put((write_computed(out, computed), None))
            except BaseException as exc:  # run-level (disk full, ...): judged by the main thread
                written.put((None, exc))
            finally:
                del computed
                mark("process_end", scan)
                write_slot.release()

    def book(status: ScanStatus) -> None:
        result.statuses.append(status)
        if progress:
            if status.ok:
                progress("done", status.scan, status)
            else:
                progress("failed", status.scan, status.failure)

    def collect(block: bool = False) -> None:
        """Book finished writes (in the main thread); re-raise run-level write errors."""
        while True:
            try:
                status, exc = (_get(written, threads[1]) if block else written.get_nowait())
            except queue.Empty:
                return
            block = False
            if exc is not None:
                raise exc
            assert status is not None
            book(status)

    threads = [threading.Thread(target=loader, name="calpipe-prefetch", daemon=True),
               threading.Thread(target=writer, name="calpipe-writer", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while (item := _get(handoff, threads[0])) is not None:
            if isinstance(item, _LoaderDied):
                raise RuntimeError("the prefetch thread died before every scan was loaded"
                                   ) from item.error
            released = threading.Event()

            def release(ev: threading.Event = released, scan: int = item.scan) -> None:
                if not ev.is_set():
                    ev.set()
                    mark("release", scan)
                    permits.release()

            if progress:
                progress("start", item.scan, None)
            mark("process_start", item.scan)
            if item.error is not None and not is_scan_fault(item.error):
                raise item.error
            run = ScanRun(item.scan)
            computed = compute_scan(item, run, config, table, store, release, sky)
            if computed is None:
                mark("process_end", item.scan)
                l1.remove_scan_group(out, item.scan)
                book(ScanStatus.failed(run))
            else:
                while not write_slot.acquire(timeout=1.0):  # the previous scan is written
                    _check_alive(threads[1])
                to_write.put(computed)
                del computed
            collect()
        to_write.put(None)
        while threads[1].is_alive() or not written.empty():
            try:
                collect(block=True)
            except queue.Empty:
                break
        threads[1].join()
        collect()
    except BaseException:
        stop.set()
        permits.release()
        to_write.put(None)
        raise
    threads[0].join(timeout=10)


@dataclass(frozen=True)
class _LoaderDied:
    error: BaseException


_T = TypeVar("_T")


def _get(q: queue.Queue[_T], producer: threading.Thread) -> _T:
    """``q.get()`` that fails within a second if ``producer`` died without handing over."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if not producer.is_alive() and q.empty():
                if producer.name == "calpipe-writer":
                    raise
                raise RuntimeError(f"thread {producer.name} ended without handing over a "
                                   "result") from None


def _check_alive(thread: threading.Thread) -> None:
    if not thread.is_alive():
        raise RuntimeError(f"thread {thread.name} died")


def calibrate_single_scan(store: str | Path, scan: int, out: str | Path,
                          config: CalibrationConfig = CalibrationConfig(), *,
                          table: AtmosphereTable | None = None) -> ScanStatus:
    """Calibrate one scan in process (all stages); raises its CalibrationError on bad data."""
    store, out = Path(store), Path(out)
    session = open_session(store, ReadLimits.from_config(config))
    table = table if table is not None else load_table(config)
    with l1.output_lock(out):
        l1.init_store(out)
        loaded = LoadedScan(scan)
        t = time.perf_counter()
        try:
            loaded.data, loaded.cal = load_scan_and_calibration(session, scan)
            loaded.next_cal = load_next_calibration(session, scan, loaded.cal.scan, config)
        except BaseException as exc:
            loaded.error = exc
        loaded.load_seconds = time.perf_counter() - t
        run = ScanRun(scan)
        sky = SkyChain(SkyHistory.empty(config.skydiff)) if config.skydiff else None
        computed = compute_scan(loaded, run, config, table, store, sky=sky)
        status = write_computed(out, computed) if computed is not None else ScanStatus.failed(run)
        if computed is None:
            l1.remove_scan_group(out, scan)
    if status.failure is not None:
        cause = (run.failure and loaded.error) or None
        raise _failure_error(status.failure, cause)
    return status


def _failure_error(failure: Failure, cause: BaseException | None) -> Exception:
    from calpipe.errors import CalibrationError

    if isinstance(cause, CalibrationError):
        return cause
    return CalibrationError(f"{failure.error} in stage {failure.stage}: {failure.message}",
                            scan=failure.scan)
