"""Snakemake adapter of rule prepare: all logic is in calpipe.workflow (tested library code)."""

from calpipe.workflow import script_main

script_main(snakemake, "prepare")  # noqa: F821 - 'snakemake' is injected by Snakemake
