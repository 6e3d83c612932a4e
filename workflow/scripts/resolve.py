"""Snakemake adapter of rule resolve: all logic is in calpipe (tested library code)."""

from calpipe.workflow.snakemake_adapter import script_main

script_main(snakemake, "resolve")  # noqa: F821 - 'snakemake' is injected by Snakemake
