"""What one Snakemake job costs before any work: `script:`, `shell:` or `run:` (issue 11).

Runs throw-away workflows of N independent jobs with `snakemake --cores 2` in one run: each
job imports what a calpipe stage job imports (calpipe.workflow.jobs, calpipe.stages, zarr)
and touches its output, as a `script:` (a new Python with Snakemake's pickled preamble), a
`shell:` command (`python -c`), or a `run:` directive executed in threads of the Snakemake
process (`--force-use-threads`, what the calpipe rules and default profile do). Prints the
wall time per job of each, plus a baseline whose jobs only `touch`. Read the ratios.

Usage: python benchmarks/bench_job_overhead.py [--jobs 40] [--json F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
IMPORTS = "import calpipe.workflow.jobs, calpipe.stages, zarr"

SNAKEFILE = """
N = {n}
rule all:
    input: expand("out/{{i}}.txt", i=range(N))
rule job:
    output: "out/{{i}}.txt"
    {body}
"""


def run(workdir: Path, body: str, n: int, script: str | None = None,
        extra: tuple[str, ...] = ()) -> float:
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE.format(n=n, body=body))
    if script is not None:
        (workdir / "job.py").write_text(script)
    t0 = time.perf_counter()
    subprocess.run([str(SNAKEMAKE), "--cores", "2", "--quiet", *extra], cwd=workdir,
                   check=True, capture_output=True)
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, help="where the throw-away workflows go [tmp]")
    ns = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(dir=ns.workdir) as tmp:
        base = Path(tmp)
        empty = run(base / "empty", "shell: 'touch {output}'", ns.jobs)
        shell = run(base / "shell",
                    f"shell: '{py} -c \"{IMPORTS}\" && touch {{output}}'", ns.jobs)
        script = run(base / "script", 'script: "job.py"', ns.jobs,
                     f"{IMPORTS}\nopen(snakemake.output[0], 'w').close()\n")
        threads = run(base / "run", f"run:\n        {IMPORTS}\n"
                      "        open(output[0], 'w').close()", ns.jobs,
                      extra=("--force-use-threads",))
    result = {"jobs": ns.jobs, "empty_s_per_job": empty, "shell_s_per_job": shell,
              "script_s_per_job": script, "run_threads_s_per_job": threads,
              "script_over_shell": script / shell}
    print(f"{'jobs':>5} {'touch s/job':>11} {'shell s/job':>11} {'script s/job':>12} "
          f"{'run+threads s/job':>17}")
    print(f"{ns.jobs:>5} {empty:>11.3f} {shell:>11.3f} {script:>12.3f} {threads:>17.3f}")
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
