rule atmosphere:
    """Fit pwv on the OFF subscans; opacity and transmission (no L0 read)."""
    input:
        resolve=rules.resolve.output.artifact,
        resolve_record=rules.resolve.output.record,
        prepare=rules.prepare.output.artifact,
        geometry=rules.prepare.output.geometry,
        prepare_record=rules.prepare.output.record,
        table=ATMOSPHERE_TABLE,
    output:
        artifact=intermediate("results/{session}/work/{scan}/atmosphere.npz"),
        record=intermediate("results/{session}/work/{scan}/atmosphere.json"),
    log:
        "results/{session}/logs/atmosphere/{scan}.log",
    benchmark:
        "results/{session}/benchmarks/atmosphere/{scan}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        config_digest=digest_of("atmosphere"),
        version=calpipe.__version__,
    run:
        run_stage("atmosphere", input, output, params, wildcards, log)
