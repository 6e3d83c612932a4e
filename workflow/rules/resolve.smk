rule resolve:
    """Read the scan and its HOT/COLD loads from L0; gain, T_rec, bad channels."""
    input:
        stamp="results/{session}/stamps/{scan}.json",
    output:
        artifact=intermediate("results/{session}/work/{scan}/resolve.npz"),
        record=intermediate("results/{session}/work/{scan}/resolve.json"),
    log:
        "results/{session}/logs/resolve/{scan}.log",
    benchmark:
        "results/{session}/benchmarks/resolve/{scan}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        manifest="results/{session}/manifest.json",
        config_digest=digest_of("resolve"),
        version=calpipe.__version__,
    run:
        run_stage("resolve", input, output, params, wildcards, log)
