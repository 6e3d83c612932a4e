rule calibrate:
    """Re-read the scan from L0, calibrate to T_A* and write its L1 group atomically.

    The L1 group (results/<session>/l1.zarr/scan_NNNNNN) is a side effect inside a shared
    store; the declared output is the per-scan status file, written last.
    """
    input:
        unpack(skydiff_of_scan),
        stamp="results/{session}/stamps/{scan}.json",
        resolve=rules.resolve.output.artifact,
        prepare=rules.prepare.output.artifact,
        atmosphere=rules.atmosphere.output.artifact,
        atmosphere_record=rules.atmosphere.output.record,
    output:
        status="results/{session}/status/{scan}.json",
    log:
        "results/{session}/logs/calibrate/{scan}.log",
    benchmark:
        "results/{session}/benchmarks/calibrate/{scan}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        manifest="results/{session}/manifest.json",
        l1_store="results/{session}/l1.zarr",
        config_digest=digest_of("calibrate"),
        version=calpipe.__version__,
    run:
        run_stage("calibrate", input, output, params, wildcards, log)
