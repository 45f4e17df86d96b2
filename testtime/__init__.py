"""testtime: a Snakemake workflow and library reproducing "Surprisal-Guided Selection" (Barnes, 2026)."""

__version__ = "0.1.0"
