rule skydiff:
    """SKYDIFF (issue 14, calibration.skydiff > 0): the previous scan's history + this scan's
    OFFs -> this scan's history and differences. A chain per session in scan order: only
    these small jobs wait for each other, not the calibration. The history is kept (not
    temporary, a few N x C x R x A values): a rerun of one scan then reruns the chain from
    that scan on, not from the session's first scan."""
    input:
        resolve=rules.resolve.output.artifact,
        resolve_record=rules.resolve.output.record,
        prepare=rules.prepare.output.artifact,
        geometry=rules.prepare.output.geometry,
        prepare_record=rules.prepare.output.record,
        previous=previous_skydiff_history,
    output:
        history="results/{session}/work/{scan}/skydiff_history.npz",
        artifact=intermediate("results/{session}/work/{scan}/skydiff.npz"),
        record=intermediate("results/{session}/work/{scan}/skydiff.json"),
    log:
        "results/{session}/logs/skydiff/{scan}.log",
    benchmark:
        "results/{session}/benchmarks/skydiff/{scan}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        config_digest=digest_of("skydiff"),
        version=calpipe.__version__,
    run:
        run_stage("skydiff", input, output, params, wildcards, log)
