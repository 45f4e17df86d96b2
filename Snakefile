"""testtime: surprisal-guided selection and test-time strategies, from task data to figures.

Read top-down: config is loaded and validated, each stage lives in rules/<stage>.smk, and
`all` asks for every figure, table and analysis the configuration enables (all_targets() in
rules/common.smk). `snakemake figures/fig4.pdf` builds Figure 4 and what it needs;
`snakemake --report results/report.html` puts them, with their captions (report/captions/),
on one HTML page.
"""

import sys

from snakemake.utils import min_version

min_version("9.19")

sys.path.insert(0, workflow.basedir)
from testtime.config import ConfigError, validate  # noqa: E402


configfile: "config/config.yaml"


# The report's front page (snakemake --report): what the workflow is and the run's configuration.
report: "report/workflow.rst"


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
    """Every figure, table and analysis the configuration enables, stage by stage (all_targets())."""
    default_target: True
    input:
        all_targets(),


rule ttt_all:
    """Every TTT figure and table of the configured experiments (§9.5): snakemake ttt_all."""
    input:
        ttt_targets(),
        probe_targets(),


rule analyses_all:
    """Tables 1, 7, 8, 11, the §12 analyses, Figures 1 and 7 and the deployable selection: snakemake analyses_all."""
    input:
        analysis_targets(),


rule rlvr_all:
    """Table 5 and the training curve of every configured RLVR run (§8): snakemake rlvr_all."""
    input:
        rlvr_targets(),
