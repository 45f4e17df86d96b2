"""testtime: surprisal-guided selection and test-time strategies, from task data to figures.

Read top-down: config is loaded and validated, each stage lives in rules/<stage>.smk, and
`all` asks for the figures. `snakemake figures/fig4.pdf` builds Figure 4 and what it needs.
"""

import sys

from snakemake.utils import min_version

min_version("9.19")

sys.path.insert(0, workflow.basedir)
from testtime.config import ConfigError, validate  # noqa: E402


configfile: "config/config.yaml"


try:
    validate(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


include: "rules/common.smk"
include: "rules/retrieve.smk"
include: "rules/tasks.smk"
include: "rules/models.smk"
include: "rules/sampling.smk"
include: "rules/evaluation.smk"
include: "rules/rlvr.smk"
include: "rules/ttt.smk"
include: "rules/sdpo.smk"
include: "rules/probes.smk"
include: "rules/analysis.smk"
include: "rules/figures.smk"


rule all:
    """Figure 4 (the default target)."""
    default_target: True
    input:
        "figures/fig4.pdf",


rule ttt_all:
    """Every TTT figure and table of the configured experiments (§9.5): snakemake ttt_all."""
    input:
        "figures/fig3.pdf",
        "figures/fig5.pdf",
        "figures/fig6.pdf",
        table_file(RUN["model"], RUN["suite"], "table2.csv"),
        ttt_table_file("table6.csv"),
        branch(bool(EXPERIMENTS["subset2"]), then=ttt_table_file("table4.csv")),
        branch(bool(EXPERIMENTS["lr_sweep"]), then=ttt_table_file("table10.csv")),
        branch(bool(EXPERIMENTS["isolated"]), then=ttt_table_file("table12.csv")),
        branch(bool(EXPERIMENTS["transfer"]), then=ttt_table_file("transfer.csv")),


rule analyses_all:
    """Tables 1, 7, 8, 11, the §12 analyses and Figures 1 and 7: snakemake analyses_all."""
    input:
        "figures/fig1.pdf",
        "figures/fig7.pdf",
        expand(
            table_file(RUN["model"], RUN["suite"], "{name}"),
            name=["table1.csv", "table7.csv", "table8.csv", "table11.csv", "length_control.json"],
        ),
        branch(bool(ANALYSES["l1"]), then=l1_table_file("logprob_variance.csv")),
        branch(bool(ANALYSES["l1"]), then=l1_table_file("full_l1.json")),


rule rlvr_all:
    """Table 5 and the training curve of every configured RLVR run (§8): snakemake rlvr_all."""
    input:
        rlvr_targets(),
