# Shared helpers of the calpipe rules. The logic lives in calpipe.workflow (tested library
# code); this file only validates the config, reads the scan manifests and names paths.
import re
import sys
from pathlib import Path

import calpipe
from calpipe import workflow as cw
from calpipe.errors import CalpipeError
from snakemake.utils import validate


def allow_missing_stores():
    """Lint and dry runs work before any L0 store exists."""
    return workflow.dryrun or any(
        arg in ("--lint", "-n", "--dry-run", "--dryrun") for arg in sys.argv
    )


validate(config, "../schemas/config.schema.yaml")

# the calibration options, validated by calpipe (a ConfigError stops the run here)
CALIBRATION = cw.calibration_config(config["calibration"])

# scan ids per session, from the manifest: built / refreshed by the main process only, so
# cluster jobs never open the L0 store to build their DAG. A store that does not exist stops
# a run with one line; lint and dry runs (a fresh checkout) go on without its scans.
try:
    SCANS = cw.load_manifests(
        config,
        main_process=workflow.is_main_process,
        allow_missing=allow_missing_stores(),
    )
except CalpipeError as exc:
    sys.exit(f"calpipe: {type(exc).__name__}: {exc}")

# wildcard constraints (set in the Snakefile): known sessions only, zero-padded scan numbers
SESSION_PATTERN = "|".join(re.escape(name) for name in SCANS) or "(?!)"


def intermediate(path):
    """Stage artifacts are temporary unless keep_intermediate is set."""
    return path if config["keep_intermediate"] else temp(path)


# the configured atmosphere table file is an input of the atmosphere rule, if set
ATMOSPHERE_TABLE = (
    [CALIBRATION.atmosphere_table] if CALIBRATION.atmosphere_table else []
)


def digest_of(stage):
    """Digest of the calibration options a stage depends on (a rerun trigger)."""
    return cw.stage_digest(CALIBRATION, stage)


def previous_skydiff_history(wildcards):
    """The SKYDIFF history of the session's previous scan (none for its first scan)."""
    scans = SCANS[wildcards.session]
    i = scans.index(wildcards.scan)
    if i == 0:
        return []
    return [f"results/{wildcards.session}/work/{scans[i - 1]}/skydiff_history.npz"]


def skydiff_of_scan(wildcards):
    """The scan's SKYDIFF artifact and record for rule calibrate, when skydiff > 0 (else
    the skydiff rules are not in the DAG)."""
    if not CALIBRATION.skydiff:
        return {}
    base = f"results/{wildcards.session}/work/{wildcards.scan}"
    return {
        "skydiff": f"{base}/skydiff.npz",
        "skydiff_record": f"{base}/skydiff.json",
    }


def all_status(wildcards):
    """Every scan's status file, over all sessions."""
    return [
        f"results/{session}/status/{scan}.json"
        for session, scans in SCANS.items()
        for scan in scans
    ]


def session_outputs(name):
    """A run output (failures.json, run_summary.json) of every session's L1 store."""
    return [f"results/{session}/l1.zarr/{name}" for session in SCANS]


def l1_store_of_input(wildcards, input):
    """The session's L1 store: the directory of its run summary (an input of the rule)."""
    return str(Path(input.summary).parent)


def quicklook_of_session(wildcards):
    """The session's quick-look directory when the config asks for quick-looks (the report
    links them, so it is written after them)."""
    if config.get("quicklook", False):
        return [f"results/{wildcards.session}/quicklook"]
    return []


def optional_targets():
    """Quick-looks and reports of every session, as the config asks."""
    targets = []
    if config.get("quicklook", False):
        targets += [f"results/{session}/quicklook" for session in SCANS]
    if config.get("report", True):
        targets += [f"results/{session}/report.html" for session in SCANS]
    return targets


def print_run_message():
    message = cw.summary_message("results/run_summary.json")
    if message:
        print(f"calpipe: {message}")


def run_stage(rule_name, input, output, params, wildcards, log):
    """A stage job: calls calpipe in this process (threads with --force-use-threads, as
    the default profile sets; a cluster job's own Snakemake process on SLURM)."""
    from calpipe.workflow.snakemake_adapter import run_job

    run_job(rule_name, input, output, params, wildcards, log, config)
