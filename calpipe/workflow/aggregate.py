"""Rule aggregate: every scan's status -> failures.json and run_summary.json.

Per session they go into the session's L1 store, exactly as the in-process mode writes them
(the same ``calpipe.runner`` functions, rows without a session key); for the campaign, into
``results/`` with a ``session`` key on every row.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calpipe.runner import ScanStatus, run_summary, write_run_outputs
from calpipe.workflow.paths import l1_path, manifest_path


def aggregate(status_files: Sequence[str | Path], results_dir: str | Path,
              sessions: Sequence[str], config_digest: str,
              results: str = "results") -> dict[str, Any]:
    """Write the per-session and the campaign outputs; returns the campaign summary."""
    statuses = [ScanStatus.from_dict(json.loads(Path(p).read_text())) for p in status_files]
    campaign_ignored: list[str] = []
    started = time.time()
    for name in sessions:
        manifest = _manifest(name, results)
        started = min(started, manifest.get("_mtime", started))
        rows = [dataclasses.replace(s, session="") for s in statuses if s.session == name]
        ignored = list(manifest.get("ignored_groups", []))
        campaign_ignored += [f"{name}/{g}" for g in ignored]
        out = l1_path(name, results)
        out.mkdir(parents=True, exist_ok=True)
        removed = _remove_stale_groups(out, manifest)
        summary = run_summary(rows, orchestration="snakemake",
                              input_store=str(manifest.get("store", "")),
                              output_store=str(out), config_digest=config_digest,
                              wall_seconds=time.time() - manifest.get("_mtime", time.time()),
                              ignored_groups=ignored, removed_groups=removed)
        write_run_outputs(out, rows, summary)
    campaign = run_summary(statuses, orchestration="snakemake",
                           input_store=", ".join(sessions), output_store=str(results_dir),
                           config_digest=config_digest, wall_seconds=time.time() - started,
                           ignored_groups=campaign_ignored)
    campaign["sessions"] = {name: {"n_scans": sum(s.session == name for s in statuses),
                                   "n_failed": sum(s.session == name and not s.ok
                                                   for s in statuses)}
                            for name in sessions}
    write_run_outputs(results_dir, statuses, campaign, with_session=True)
    return campaign


def _remove_stale_groups(out: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Groups of scans that are no longer in the input store go (as in-process)."""
    from calpipe import l1
    from calpipe.schema import scan_group_name

    if "scans" not in manifest or not (out / "zarr.json").exists():
        return []
    wanted = {int(s) for s in manifest["scans"]}
    gone = sorted(set(l1.list_scans(out)) - wanted)
    with l1.output_lock(out, shared=True):
        for scan in gone:
            l1.remove_scan_group(out, scan)
    return [scan_group_name(n) for n in gone]


def _manifest(session: str, results: str) -> Mapping[str, Any]:
    path = manifest_path(session, results)
    try:
        value = dict(json.loads(path.read_text()))
        value["_mtime"] = path.stat().st_mtime
        return value
    except (OSError, ValueError):
        return {}
