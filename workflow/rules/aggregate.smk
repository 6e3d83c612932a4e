rule aggregate:
    """Every scan's status -> failures.json and run_summary.json, per session (inside its
    L1 store, as the in-process mode writes them) and for the campaign (results/)."""
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
        session_failures=session_outputs("failures.json"),
        session_summaries=session_outputs("run_summary.json"),
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


rule quicklook:
    """A quick-look PNG of every calibrated scan of a session (config: quicklook)."""
    input:
        summary="results/{session}/l1.zarr/run_summary.json",
    output:
        directory("results/{session}/quicklook"),
    log:
        "results/{session}/logs/quicklook.log",
    conda:
        "../envs/calpipe.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        l1_store=l1_store_of_input,
        version=calpipe.__version__,
    script:
        "../scripts/quicklook.py"


rule report:
    """The HTML campaign report of a session: every scan and every failure (config: report)."""
    input:
        failures="results/{session}/l1.zarr/failures.json",
        summary="results/{session}/l1.zarr/run_summary.json",
        quicklook=quicklook_of_session,
    output:
        html="results/{session}/report.html",
    log:
        "results/{session}/logs/report.log",
    conda:
        "../envs/calpipe.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        l1_store=l1_store_of_input,
        version=calpipe.__version__,
    script:
        "../scripts/report.py"
