"""Snakemake adapter of rule quicklook: all logic is in calpipe (tested library code)."""

from calpipe.workflow.snakemake_adapter import script_main

script_main(snakemake, "quicklook")  # noqa: F821 - 'snakemake' is injected by Snakemake
