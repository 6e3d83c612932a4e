rule aggregate:
    """Read every scan's status: failures.json (always written) and the run summary."""
    input:
        status=all_status,
    output:
        failures=report(
            "results/failures.json",
            caption="../report/failures.rst",
            category="Run",
        ),
        summary=report(
            "results/run_summary.json",
            caption="../report/summary.rst",
            category="Run",
        ),
        session_failures=session_failures(),
    log:
        "results/logs/aggregate.log",
    localrule: True
    conda:
        "../envs/calpipe.yaml"
    params:
        sessions=list(SCANS),
        version=calpipe.__version__,
    script:
        "../scripts/aggregate.py"
