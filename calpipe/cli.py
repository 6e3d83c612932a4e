"""The ``calpipe`` command line: simulate, calibrate (in-process), atm-table, report ...

Exit codes: 0 all scans calibrated; 2 partial failure; 1 nothing succeeded or a fatal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from calpipe import __version__

log = logging.getLogger("calpipe")


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 1 (exit 2 means partial success)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message}\n")


def _setup_logging(verbose: int, quiet: bool) -> None:
    """-q warnings only... errors; default warnings; -v calpipe's info; -vv calpipe's debug.

    Other libraries (zarr, numcodecs, asyncio, matplotlib) stay at WARNING whatever -v says.
    """
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False,
                                              console=_console(stderr=True))])
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(
        verbose, logging.DEBUG)
    logging.getLogger("calpipe").setLevel(level)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


# -- simulate ---------------------------------------------------------------------------------

def _cmd_simulate(ns: argparse.Namespace) -> int:
    from dataclasses import replace

    from calpipe.simulate import SimulationConfig, simulate_session, truth_path_for

    cfg = SimulationConfig()
    changes: dict[str, Any] = {}
    for name in ("seed", "n_scans", "load_every", "n_channels", "n_dumps", "n_receivers",
                 "n_arrays", "frequency_ghz", "pwv_mm", "sideband", "gain_drift_per_hour",
                 "fill_fraction", "dead_channels", "zarr_format", "first_scan", "exptime_s",
                 "bandwidth_ghz", "if_ghz", "beam_imbalance_k", "sky_fluctuation"):
        value = getattr(ns, name)
        if value is not None:
            changes[name] = value
    if ns.no_noise:
        changes["noise"] = False
    if ns.modes:
        changes["modes"] = tuple(ns.modes.split(","))
    if ns.no_truth:
        changes["write_truth"] = False
    if ns.gain_drift_continuous:
        changes["gain_drift_reset"] = False
    try:
        cfg = replace(cfg, **changes)
    except ValueError as exc:
        print(f"calpipe simulate: {exc}", file=sys.stderr)
        return 1
    table = None
    if ns.atmosphere_table:
        from calpipe.atmosphere.tableio import load_table

        table = load_table(ns.atmosphere_table)
    plans = simulate_session(ns.output, cfg, table=table, overwrite=ns.overwrite)
    n_load = sum(p.kind == "load" for p in plans)
    print(f"wrote {ns.output}: {len(plans)} scans ({n_load} load scans, "
          f"{len(plans) - n_load} science), {cfg.n_channels} channels, "
          f"{cfg.n_receivers} x {cfg.n_arrays} pixels, pwv {cfg.pwv_mm} mm")
    if cfg.write_truth:
        print(f"truth: {truth_path_for(ns.output)}")
    return 0


# -- calibrate --------------------------------------------------------------------------------

def build_config(ns: argparse.Namespace) -> Any:
    from calpipe.config import CalibrationConfig

    config = CalibrationConfig.from_file(ns.config) if ns.config else CalibrationConfig()
    changes: dict[str, Any] = {}
    for option, name in (("mode", "mode"), ("physics", "physics"), ("pwv", "pwv_fixed_mm"),
                         ("pwv_fallback", "pwv_fallback_mm"), ("reference", "reference"),
                         ("t_atm", "t_atm"), ("atmosphere_table", "atmosphere_table"),
                         ("gs_xs", "gs_xs"), ("gi_xi", "gi_xi"), ("f_eff", "f_eff"),
                         ("scale", "scale"), ("eta_mb", "eta_mb"), ("eta_fss", "eta_fss"),
                         ("telescope", "telescope"), ("gain_interpolate", "gain_interpolate"),
                         ("calibration_select", "calibration_select"),
                         ("dbs_merge", "dbs_merge"), ("skydiff", "skydiff")):
        value = getattr(ns, option, None)
        if value is not None:
            changes[name] = value
    if getattr(ns, "per_pixel_pwv", False):
        changes["pwv_per_pixel"] = True
    if getattr(ns, "per_pair_pwv", False):
        changes["pwv_per_pair"] = True
    config = config.replace(**changes) if changes else config
    if config.telescope is not None:  # an unknown profile stops the run before any scan
        from calpipe.telescopes import load_profile

        load_profile(config.telescope)
    return config


def _parse_scans(text: str | None) -> list[int] | None:
    """'1001,1003-1005' -> [1001, 1003, 1004, 1005]; anything else is a ConfigError."""
    import re

    from calpipe.errors import ConfigError

    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"([0-9]{1,9})(?:-([0-9]{1,9}))?", part, re.ASCII)
        if not match:
            raise ConfigError(f"--scans: {part!r} is not a scan number or a range N-M "
                              "(e.g. --scans 1001,1003-1005)")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if hi < lo:
            raise ConfigError(f"--scans: empty range {part!r}")
        out.extend(range(lo, hi + 1))
    return out


def _cmd_calibrate(ns: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from calpipe.l0 import open_session
    from calpipe.pipeline import calibrate_store

    config = build_config(ns)
    scans = _parse_scans(ns.scans)
    session = open_session(ns.session)
    todo = [n for n in session.source_scans() if scans is None or n in scans]
    del session
    console = _console(stderr=True)
    failed = 0
    with Progress(TextColumn("[bold]calibrating"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console, disable=ns.quiet,
                  transient=False) as bar:
        task = bar.add_task("scans", total=len(todo), status="")

        def progress(event: str, scan: int, payload: Any) -> None:
            nonlocal failed
            if event == "start":
                bar.update(task, status=f"scan {scan}, {failed} failed")
            elif event in ("done", "failed"):
                failed += event == "failed"
                bar.update(task, advance=1, status=f"scan {scan}, {failed} failed")

        existing = "overwrite" if ns.overwrite else ("add" if ns.add else "refuse")
        result = calibrate_store(ns.session, ns.output, config, scans=scans, progress=progress,
                                 existing=existing)
    ns._exit_code = result.exit_code  # kept if stdout is closed while printing below
    if ns.quicklook:
        from calpipe.quicklook import default_quicklook_dir, quicklook_store

        pngs = quicklook_store(ns.output)
        if not ns.quiet:
            print(f"wrote {len(pngs)} quick-look(s) to {default_quicklook_dir(ns.output)}",
                  file=sys.stderr)
    if not ns.quiet:  # with --json, stdout holds the JSON only
        try:
            _print_summary(result, ns.output, stderr=ns.json)
        except SystemExit:  # rich's answer to a closed stdout (it has silenced stdout)
            return result.exit_code
    if ns.json:
        print(json.dumps({"exit_code": result.exit_code,
                          "succeeded": [s.scan for s in result.successes],
                          "failed": [f.scan for f in result.failures],
                          "message": result.summary.get("message")}))
    return result.exit_code


def _print_summary(result: Any, out: Path, stderr: bool = False) -> None:
    from rich.table import Table

    table = Table(title=f"calpipe calibrate -> {out}")
    for col in ("scan", "mode", "pwv (mm)", "median T_sys (K)", "status"):
        table.add_column(col)
    rows = [(s.scan, s.mode, f"{s.pwv_mm:.3f}", f"{s.median_t_sys_k:.1f}", "[green]ok")
            for s in result.successes]
    rows += [(f.scan, "", "", "", f"[red]failed in {f.stage}: {f.error}")
             for f in result.failures]
    for row in sorted(rows, key=lambda r: r[0]):
        table.add_row(str(row[0]), *row[1:])
    console = _console(stderr=stderr)
    if result.statuses:
        console.print(table)
    n_fail = len(result.failures)
    if n_fail:
        n_all = n_fail + len(result.successes)
        console.print(f"{n_fail} of {n_all} scans failed, see {Path(out) / 'failures.json'}")
    else:
        console.print(result.summary.get("message", ""))


# -- report (issue 8, calpipe.report) ---------------------------------------------------------

def _cmd_report(ns: argparse.Namespace) -> int:
    from calpipe.report import default_report_path, write_report

    out = ns.output or default_report_path(ns.store)
    write_report(ns.store, out, failures=ns.failures, summary=ns.summary,
                 embed_quicklooks=ns.quicklooks)
    if not ns.quiet:
        print(f"wrote {out}")
    return 0


# -- atm-table --------------------------------------------------------------------------------

def _cmd_atm_table(ns: argparse.Namespace, rest: list[str]) -> int:
    if ns.action == "build":
        from calpipe.atmosphere.am_builder import main as build_main

        return build_main([*rest, "-q"] if ns.quiet and "-q" not in rest else rest)
    from calpipe.atmosphere.tableio import default_table_path, load_default_table, load_table

    table = load_table(rest[0]) if rest else load_default_table()
    f, p, w = table.frequency_hz, table.pressure_hpa, table.pwv_mm
    print(f"table: {rest[0] if rest else default_table_path()}")
    print(f"model: {table.model}\ndigest: {table.digest}")
    print(f"frequency: {f[0] / 1e9:.3f}-{f[-1] / 1e9:.3f} GHz, {f.size} points")
    print(f"pwv nodes: {w.size} ({w[0]:.3g}-{w[-1]:.3g} mm)")
    print(f"ground pressure nodes: {', '.join(f'{x:g}' for x in p)} hPa")
    print(f"t_atm: {'yes' if table.t_atm is not None else 'no (uses T_amb)'}")
    return 0


# -- run / manifest (the Snakemake workflow) ---------------------------------------------------

def repo_snakefile() -> Path | None:
    """workflow/Snakefile of the source checkout calpipe is installed from (editable)."""
    candidate = Path(__file__).resolve().parent.parent / "workflow" / "Snakefile"
    return candidate if candidate.exists() else None


def _snakemake_command() -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def _cmd_run(ns: argparse.Namespace, rest: list[str]) -> int:
    import subprocess

    from calpipe.runner import read_run_summary
    from calpipe.workflow.paths import RESULTS

    directory = Path(ns.directory)
    cmd = _snakemake_command()
    snakefile = ns.snakefile or repo_snakefile()
    if snakefile is not None:
        cmd += ["--snakefile", str(Path(snakefile).resolve())]
    cmd += ["--directory", str(directory)]
    configfile = Path(ns.configfile).resolve() if ns.configfile else None
    if ns.skydiff is not None:  # issue 14: into a copy of the config (snakemake's --config
        configfile = _config_with(directory, configfile,  # would give the string "N")
                                  {"skydiff": ns.skydiff})
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
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
    returncode = _wait_for_snakemake(subprocess.Popen(cmd))
    if returncode != 0:
        print(f"calpipe run: snakemake failed (exit {returncode})", file=sys.stderr)
        return 1
    if "--unlock" in rest:
        print(f"calpipe run: unlocked {directory.resolve()}")
        return 0
    if any(a in ("-n", "--dry-run", "--dryrun", "--lint", "--report") or a.startswith("--report")
           for a in rest):
        return 0
    summary_path = directory / RESULTS / "run_summary.json"
    summary = read_run_summary(summary_path)
    if summary is None:
        print(f"calpipe run: no run summary at {summary_path}", file=sys.stderr)
        return 1
    print(summary["message"])
    return int(summary["exit_code"])


def _config_with(directory: Path, configfile: Path | None, calibration: dict[str, Any]
                 ) -> Path:
    """The workflow config (``configfile``, else DIRECTORY/config/config.yaml) with
    ``calibration`` options set, written to DIRECTORY/results/calpipe-run.config.yaml."""
    import yaml

    from calpipe.errors import ConfigError
    from calpipe.workflow.paths import RESULTS

    source = configfile or directory / "config" / "config.yaml"
    try:
        config = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {source}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping")
    config["calibration"] = {**dict(config.get("calibration") or {}), **calibration}
    out = directory / RESULTS / "calpipe-run.config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out.resolve()


def _wait_for_snakemake(proc: Any) -> int:
    """Wait for snakemake. Ctrl-C reaches it through the terminal's process group; here we
    only keep waiting while it cleans up (a second signal would cut its clean-up short and
    leave a lock behind)."""
    while True:
        try:
            return int(proc.wait())
        except KeyboardInterrupt:
            print("calpipe run: interrupted; waiting for snakemake to clean up",
                  file=sys.stderr)


def _cmd_manifest(ns: argparse.Namespace) -> int:
    import os

    import yaml

    from calpipe.errors import ConfigError
    from calpipe.workflow.manifest import build_manifest, calibration_config
    from calpipe.workflow.paths import check_session_names, manifest_path

    # STORE and an explicit --configfile are where the user stands, not in DIRECTORY; the
    # config's default and its stores are the workflow's, relative to DIRECTORY
    store_arg = str(Path(ns.store).resolve()) if ns.store else None
    configfile = (Path(ns.configfile) if ns.configfile
                  else Path(ns.directory) / "config" / "config.yaml").resolve()
    if not Path(ns.directory).is_dir():
        raise ConfigError(f"--directory {ns.directory}: no such directory")
    os.chdir(ns.directory)
    config: dict[str, Any] = {}
    if not store_arg or configfile.exists():
        try:
            config = yaml.safe_load(configfile.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {configfile}: {exc}") from exc
    stores = dict(config.get("stores") or {})
    if store_arg:
        stores = {ns.session: store_arg}
    if not stores:
        raise ConfigError("no stores: give STORE or a config file with 'stores'")
    check_session_names(stores)
    mode = ns.stamp or str((config.get("manifest") or {}).get("stamp", "stat"))
    for name, store in stores.items():
        calib = config.get("calibration") or {}
        manifest = build_manifest(name, store, stamp_mode=mode, next_calibration=(
            calibration_config(calib).wants_next_calibration))
        print(f"{manifest_path(name)}: {len(manifest['scans'])} scans "
              f"({len(manifest['calibration_only'])} calibration-only) from {store}")
    return 0


def _add_workflow_commands(sub: Any) -> None:
    """``calpipe run`` and ``calpipe manifest``."""
    p = sub.add_parser(
        "run", help="run the Snakemake workflow (exit 0 all ok / 2 partial / 1 failed)",
        description="Run workflow/Snakefile through the snakemake command line (profiles work: "
                    "--workflow-profile profiles/slurm). Unknown options go to snakemake.")
    p.add_argument("--directory", "-d", default=".", help="working directory [.]")
    p.add_argument("--configfile", help="workflow config [config/config.yaml in DIRECTORY]")
    p.add_argument("--snakefile", help="Snakefile [the calpipe checkout's workflow/Snakefile]")
    p.add_argument("--cores", "-c",
                   help="cores for a local run (passed to snakemake) [the default profile: all]")
    p.add_argument("--skydiff", type=int, metavar="N",
                   help="set calibration.skydiff (SKYDIFF diagnostic, 0 off) over the config")
    p.set_defaults(func=_cmd_run, takes_rest=True)

    p = sub.add_parser("manifest", help="write the scan manifest(s) and input stamps of a run")
    p.add_argument("store", nargs="?",
                   help="one L0 store, relative to the current directory (else every store "
                        "of the config, relative to DIRECTORY)")
    p.add_argument("--session", default="demo", help="session name for STORE [demo]")
    p.add_argument("--configfile",
                   help="workflow config, relative to the current directory "
                        "[DIRECTORY/config/config.yaml]")
    p.add_argument("--directory", "-d", default=".",
                   help="workflow working directory: the manifests go to "
                        "DIRECTORY/results/<session>/ [.]")
    p.add_argument("--stamp", choices=("content", "stat"),
                   help="input stamp mode [config manifest.stamp, else stat]")
    p.set_defaults(func=_cmd_manifest)



# -- parser -----------------------------------------------------------------------------------

def _add_calibration_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration options (override the config file)")
    g.add_argument("--config", type=Path, help="YAML/JSON file with calibration options")
    g.add_argument("--mode", choices=("auto", "tp", "otf", "otf-chopped"),
                   help="observing mode [auto]")
    g.add_argument("--dbs-merge", action="store_true", default=None,
                   help="otf-chopped: merge the k-th A and B ON into (T_A + T_B) / 2")
    g.add_argument("--physics", choices=("exact", "kalibrate-compat"),
                   help="physics constants [exact]")
    g.add_argument("--pwv", type=float, metavar="MM", help="fixed pwv: skip the fit")
    g.add_argument("--pwv-fallback", type=float, metavar="MM",
                   help="pwv to use when the fit fails (recorded in the attributes)")
    g.add_argument("--per-pixel-pwv", action="store_true", help="fit pwv per pixel")
    g.add_argument("--per-pair-pwv", action="store_true",
                   help="fit pwv per OFF subscan; each ON at its reference's pwv")
    g.add_argument("--reference", choices=("linear", "nearest"),
                   help="OFF interpolation in time [linear]")
    g.add_argument("--t-atm", choices=("model", "ambient"),
                   help="atmosphere emission temperature: table or T_amb [model]")
    g.add_argument("--atmosphere-table", metavar="FILE", help="atmosphere table [shipped]")
    g.add_argument("--gs-xs", type=float, help="signal sideband gain default")
    g.add_argument("--gi-xi", type=float, help="image sideband gain default")
    g.add_argument("--f-eff", type=float, help="forward efficiency default")
    g.add_argument("--scale", choices=("ta_star", "tmb"),
                   help="temperature scale of L1: T_A* or T_mb [ta_star]")
    g.add_argument("--eta-mb", type=float, help="main-beam efficiency B_eff (for --scale tmb)")
    g.add_argument("--eta-fss", type=float,
                   help="forward efficiency F_eff of the T_mb conversion [f_eff]")
    g.add_argument("--gain-interpolate", type=int, choices=(0, 3),
                   help="gain-drift correction to the next calibration snapshot: 0 off, 3 ON "
                        "and OFF counts [0]")
    g.add_argument("--calibration-select", choices=("lloadsn", "nearest", "linear"),
                   help="calibration snapshot: lloadsn's, the nearest in time of it and "
                        "the next one, or both interpolated in time [lloadsn]")
    g.add_argument("--telescope", metavar="NAME",
                   help="telescope profile (calpipe/data/telescopes) [from the scan attribute]")
    g.add_argument("--skydiff", type=int, metavar="N",
                   help="SKYDIFF diagnostic: each OFF's (OFF - HOT) / gamma minus that of the N "
                        "most recent previous OFFs of its layout, in L1; 0 off [0]")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="calpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"calpipe {__version__}")
    verbosity = _Parser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                           help="-v: calpipe's stage-level progress; -vv: calpipe's debug "
                                "output (other libraries stay quiet)")
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="errors only, no progress bar or summary table")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="as after a command (-v info, -vv debug)")
    parser.add_argument("-q", "--quiet", action="store_true", default=False,
                        help="as after a command")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _orig_add = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> Any:  # -v / -q also after the command
        return _orig_add(name, parents=[verbosity], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    from calpipe.simulate import SimulationConfig

    d = SimulationConfig()
    p = sub.add_parser("simulate", help="write a synthetic L0 session (and its truth)",
                       description="Write a deterministic synthetic L0 session and its truth "
                                   "store OUTPUT.truth.zarr (docs/simulation.md).")
    p.add_argument("output", type=Path, help="L0 session store to write (OUT.zarr)")
    p.add_argument("--seed", type=int, help=f"random seed [{d.seed}]")
    p.add_argument("--n-scans", type=int,
                   help=f"scans in total, load scans included [{d.n_scans}]")
    p.add_argument("--load-every", type=int,
                   help=f"a calibration-only load scan every N scans [{d.load_every}]")
    p.add_argument("--first-scan", type=int, help=f"number of the first scan [{d.first_scan}]")
    p.add_argument("--n-channels", type=int, help=f"spectral channels [{d.n_channels}]")
    p.add_argument("--n-dumps", type=int, help=f"dumps per subscan [{d.n_dumps}]")
    p.add_argument("--n-receivers", type=int,
                   help=f"receivers (pixels) per array [{d.n_receivers}]")
    p.add_argument("--n-arrays", type=int, help=f"arrays (sub-bands) [{d.n_arrays}]")
    p.add_argument("--frequency-ghz", type=float, metavar="GHZ",
                   help=f"signal sky frequency at the reference channel [{d.frequency_ghz}]")
    p.add_argument("--if-ghz", type=float, metavar="GHZ",
                   help=f"intermediate frequency: image = signal - 2 IF [{d.if_ghz}]")
    p.add_argument("--bandwidth-ghz", type=float, metavar="GHZ",
                   help=f"spectrometer bandwidth [{d.bandwidth_ghz}]")
    p.add_argument("--exptime-s", type=float, metavar="S",
                   help=f"integration time per dump [{d.exptime_s}]")
    p.add_argument("--pwv-mm", type=float, metavar="MM",
                   help=f"precipitable water vapour of the sky [{d.pwv_mm}]")
    p.add_argument("--sideband", choices=("dsb", "2sb"),
                   help=f"dsb: gains 0.5 / 0.5; 2sb: 0.95 / 0.05 [{d.sideband}]")
    p.add_argument("--modes", help="science scan modes to cycle, comma-separated, e.g. tp,otf "
                                   f"[{','.join(d.modes)}]")
    p.add_argument("--beam-imbalance-k", type=float, metavar="K",
                   help="otf-chopped: amplitude of the chopper-beam imbalance ripple added to "
                        f"chop phase 1 (T_A* units) [{d.beam_imbalance_k}]")
    p.add_argument("--sky-fluctuation", type=float, metavar="FRACTION",
                   help="otf-chopped: fractional rms of the sky per dump, the same in both "
                        f"chop phases [{d.sky_fluctuation}]")
    p.add_argument("--gain-drift-per-hour", type=float, metavar="FRACTION",
                   help="fractional gain change per hour since the load scan "
                        f"[{d.gain_drift_per_hour}]")
    p.add_argument("--gain-drift-continuous", action="store_true",
                   help="the gain drift runs through the session instead of restarting at "
                        "every load scan [restarts]")
    p.add_argument("--fill-fraction", type=float, metavar="FRACTION",
                   help="fraction of ON dump spectra replaced by the fill value "
                        f"[{d.fill_fraction}]")
    p.add_argument("--dead-channels", type=int, metavar="N",
                   help=f"channels per pixel with constant counts [{d.dead_channels}]")
    p.add_argument("--zarr-format", type=int, choices=(2, 3),
                   help=f"Zarr format of the store [{d.zarr_format}]")
    p.add_argument("--no-noise", action="store_true", help="noise-free counts [noise on]")
    p.add_argument("--no-truth", action="store_true",
                   help="do not write OUTPUT.truth.zarr [written]")
    p.add_argument("--atmosphere-table", help="atmosphere table of the forward model [shipped]")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT if it exists [refuse]")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("calibrate", help="calibrate a session in process (prefetch mode)")
    p.add_argument("session", type=Path, help="L0 session store")
    p.add_argument("output", type=Path, help="L1 store to write")
    p.add_argument("--scans", help="scan selection, e.g. 1001,1003-1005")
    p.add_argument("--quicklook", action="store_true", help="write a PNG per scan")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line with the result on stdout (the table goes to "
                        "stderr)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace scan groups that OUTPUT holds from a run with other "
                               "calibration options (default: refuse)")
    existing.add_argument("--add", action="store_true",
                          help="keep such groups next to this run's scans")
    _add_calibration_options(p)
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("report", help="write a self-contained HTML campaign report",
                       description="Summary of an L1 store (pwv, T_sys, T_rec versus time and "
                                   "scan, every scan and failure, QA metrics) as one HTML "
                                   "file with embedded plots; see docs/qa.md.")
    p.add_argument("store", type=Path, help="L1 store (OUT.zarr)")
    p.add_argument("-o", "--output", type=Path,
                   help="HTML file to write [OUT_report.html next to OUT.zarr]")
    p.add_argument("--failures", type=Path, help="failures.json [OUT.zarr/failures.json]")
    p.add_argument("--summary", type=Path, help="run_summary.json [OUT.zarr/run_summary.json]")
    p.add_argument("--quicklooks", action="store_true",
                   help="also embed every scan's quick-look (large)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("atm-table", help="build or describe an atmosphere table",
                       description="calpipe atm-table build OUT.npz [options] | "
                                   "calpipe atm-table info [TABLE]")
    p.add_argument("action", choices=("build", "info"),
                   help="build OUT.npz (options: calpipe atm-table build --help) or info "
                        "[TABLE] (default: the shipped table)")
    p.set_defaults(func=_cmd_atm_table, takes_rest=True)

    _add_workflow_commands(sub)
    from calpipe.importers import cli as importers_cli  # issue 16: calpipe import sdfits

    importers_cli.add_cli(sub)
    from calpipe.export.cli import add_cli as add_export_cli  # issue 15
    from calpipe.quicklook_cli import add_cli as add_quicklook_cli

    add_export_cli(sub)
    add_quicklook_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from calpipe.errors import CalibrationError, CalpipeError

    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    if rest and not getattr(ns, "takes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _setup_logging(ns.verbose, ns.quiet)
    try:
        if getattr(ns, "takes_rest", False):
            return int(ns.func(ns, rest))
        return int(ns.func(ns))
    except CalibrationError as exc:
        print(f"calpipe: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except CalpipeError as exc:
        print(f"calpipe: error: {exc}", file=sys.stderr)
        return 1
    except FileExistsError as exc:
        print(f"calpipe: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout closed early (| head): the work itself is done
        _silence_stdout()
        return int(getattr(ns, "_exit_code", 0))
    except OSError as exc:  # disk full, read-only output, ...: one line, exit 1
        print(f"calpipe: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("calpipe: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """After a broken pipe, send further output (and the interpreter's final flush) nowhere."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
