rule prepare:
    """Read the scan from L0; OFF averages and the reference of every ON subscan."""
    input:
        stamp="results/{session}/stamps/{scan}.json",
    output:
        artifact=intermediate("results/{session}/work/{scan}/prepare.npz"),
        geometry=intermediate("results/{session}/work/{scan}/geometry.npz"),
        record=intermediate("results/{session}/work/{scan}/prepare.json"),
    log:
        "results/{session}/logs/prepare/{scan}.log",
    benchmark:
        "results/{session}/benchmarks/prepare/{scan}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        manifest="results/{session}/manifest.json",
        config_digest=digest_of("prepare"),
        version=calpipe.__version__,
    run:
        run_stage("prepare", input, output, params, wildcards, log)
