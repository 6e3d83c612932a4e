"""What one Snakemake job costs before any work: `script:` against `shell:` (issue 11).

Runs two throw-away workflows of N independent jobs with `snakemake --cores 2` in one run:
each job imports what a calpipe stage job imports (calpipe.workflow.jobs, calpipe.stages,
zarr) and touches its output, either as a `script:` (Snakemake's pickled preamble) or as a
`shell:` command (`python -c`). Prints the wall time per job of each and their ratio, plus a
baseline workflow whose jobs import nothing. Read the ratio (shared, noisy machines).

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


def run(workdir: Path, body: str, n: int, script: str | None = None) -> float:
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE.format(n=n, body=body))
    if script is not None:
        (workdir / "job.py").write_text(script)
    t0 = time.perf_counter()
    subprocess.run([str(SNAKEMAKE), "--cores", "2", "--quiet"], cwd=workdir, check=True,
                   capture_output=True)
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        empty = run(base / "empty", "shell: 'touch {output}'", ns.jobs)
        shell = run(base / "shell",
                    f"shell: '{py} -c \"{IMPORTS}\" && touch {{output}}'", ns.jobs)
        script = run(base / "script", 'script: "job.py"', ns.jobs,
                     f"{IMPORTS}\nopen(snakemake.output[0], 'w').close()\n")
    result = {"jobs": ns.jobs, "empty_s_per_job": empty, "shell_s_per_job": shell,
              "script_s_per_job": script, "script_over_shell": script / shell}
    print(f"{'jobs':>5} {'empty s/job':>11} {'shell s/job':>11} {'script s/job':>12} "
          f"{'script/shell':>12}")
    print(f"{ns.jobs:>5} {empty:>11.3f} {shell:>11.3f} {script:>12.3f} "
          f"{script / shell:>12.2f}")
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
