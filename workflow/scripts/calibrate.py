"""Snakemake adapter of rule calibrate: all logic is in calpipe (tested library code)."""

from calpipe.workflow.snakemake_adapter import script_main

script_main(snakemake, "calibrate")  # noqa: F821 - 'snakemake' is injected by Snakemake
