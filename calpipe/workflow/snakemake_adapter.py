"""The entry point of every ``workflow/scripts/*.py`` adapter: ``script_main(snakemake, rule)``.

It sets up the job's log, maps the rule's inputs, outputs and params onto one function of
``calpipe.workflow.jobs`` (or the aggregation, quick-look and report) and logs the outcome.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from calpipe import __version__

log = logging.getLogger(__name__)


def _setup_job_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _ThisThread(logging.Filter):
    """Passes the records of one thread (jobs run concurrently in one process)."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


def run_job(rule: str, input: Any, output: Any, params: Any, wildcards: Any, log_files: Any,
            config: Any) -> None:
    """A ``run:`` job in the Snakemake process: like ``script_main``, with a log file that
    holds this job's records only."""
    smk = SimpleNamespace(input=input, output=output, params=params, wildcards=wildcards,
                          log=log_files, config=config)
    handler: logging.Handler | None = None
    calpipe_log = logging.getLogger("calpipe")
    if log_files:
        Path(log_files[0]).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_files[0], mode="w")
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_ThisThread())
        calpipe_log.addHandler(handler)
        if calpipe_log.level == logging.NOTSET or calpipe_log.level > logging.INFO:
            calpipe_log.setLevel(logging.INFO)
    try:
        _dispatch(smk, rule)
    except BaseException:
        log.exception("rule %s failed (hard error)", rule)
        raise
    finally:
        if handler is not None:
            calpipe_log.removeHandler(handler)
            handler.close()


def script_main(smk: Any, rule: str) -> None:
    """Run rule ``rule`` for the Snakemake job object ``smk``."""
    _setup_job_logging(smk.log[0] if smk.log else None)
    try:
        _dispatch(smk, rule)
    except BaseException:
        log.exception("rule %s failed (hard error)", rule)
        raise


def _optional_input(inputs: Any, name: str) -> str | None:
    """A named input that a function may have left empty (issue 14: the SKYDIFF inputs)."""
    value = getattr(inputs, name, None) if name in inputs.keys() else None
    if value is None or isinstance(value, str):
        return value
    values = list(value)
    return str(values[0]) if values else None


def _dispatch(smk: Any, rule: str) -> None:
    from calpipe.workflow.manifest import calibration_config, manifest_store

    i, o, p = smk.input, smk.output, smk.params
    # the whole calibration section; the rule's param is the digest of what this stage uses
    config = calibration_config(smk.config.get("calibration"))
    if rule == "aggregate":
        from calpipe.workflow.aggregate import aggregate

        summary = aggregate(list(i.status), Path(o.failures).parent, list(p.sessions),
                            config.digest)
        log.info("%s", summary["message"])
        return
    if rule == "quicklook":
        from calpipe.quicklook import quicklook_store

        Path(o[0]).mkdir(parents=True, exist_ok=True)
        quicklook_store(p.l1_store, o[0])
        return
    if rule == "report":
        from calpipe.report import write_report

        write_report(p.l1_store, o.html, failures=i.failures, summary=i.summary)
        return
    from calpipe.workflow import jobs

    scan = int(smk.wildcards.scan)
    session = smk.wildcards.session
    store = manifest_store(session) if rule in ("resolve", "prepare", "calibrate") else ""
    log.info("calpipe %s, rule %s, session %s, scan %d, config %s", __version__, rule,
             session, scan, config.digest)
    if rule == "resolve":
        rec = jobs.run_resolve(store, scan, config, o.artifact, o.record)
        failure = rec["failure"]
    elif rule == "prepare":
        rec = jobs.run_prepare(store, scan, config, o.artifact, o.geometry, o.record)
        failure = rec["failure"]
    elif rule == "atmosphere":
        rec = jobs.run_atmosphere(scan, config, i.resolve_record, i.prepare_record, i.resolve,
                                  i.prepare, i.geometry, o.artifact, o.record)
        failure = rec["failure"]
    elif rule == "skydiff":
        rec = jobs.run_skydiff(scan, config, i.resolve_record, i.prepare_record, i.resolve,
                               i.prepare, i.geometry, _optional_input(i, "previous"),
                               o.history, o.artifact, o.record)
        failure = rec["failure"]
    elif rule == "calibrate":
        status = jobs.run_calibrate(store, scan, session, config, p.l1_store, i.resolve,
                                    i.prepare, i.atmosphere, i.atmosphere_record, o.status,
                                    _optional_input(i, "skydiff"),
                                    _optional_input(i, "skydiff_record"))
        failure = status.failure.to_dict() if status.failure else None
    else:  # pragma: no cover - a wiring bug
        raise ValueError(f"unknown rule {rule!r}")
    if failure:
        log.warning("scan %d failed in stage %s: %s: %s", scan, failure["stage"],
                    failure["error"], failure["message"])
    else:
        log.info("scan %d: %s done", scan, rule)
