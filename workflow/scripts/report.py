"""Snakemake adapter of rule report: all logic is in calpipe (tested library code)."""

from calpipe.workflow.snakemake_adapter import script_main

script_main(snakemake, "report")  # noqa: F821 - 'snakemake' is injected by Snakemake
