# Figures: each drawn from tables the workflow wrote, never from raw records.


rule fig4:
    """Figure 4: fast_1 success rate and mean speedup per selection strategy (Table 3)."""
    input:
        table=table_file(RUN["model"], RUN["suite"], "table3.csv"),
        table_provenance=table_file(RUN["model"], RUN["suite"], "table3.csv.provenance.json"),
    output:
        figure=report(
            "figures/fig4.pdf",
            caption="../report/captions/fig4.rst",
            category="Figures",
        ),
        provenance=report(
            "figures/fig4.pdf.provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/fig4.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="fig4",
        style=cfg("figures", "fig4"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule fig3:
    """Figure 3: Best-of-N scaling with the TTT BoA line and its equivalent K."""
    input:
        table=table_file(RUN["model"], RUN["suite"], "table2.csv"),
        table_provenance=table_file(RUN["model"], RUN["suite"], "table2.csv.provenance.json"),
        ttt=ttt_table_file("table6_summary.json"),
    output:
        figure=report(
            "figures/fig3.pdf",
            caption="../report/captions/fig3.rst",
            category="Figures",
        ),
        provenance=report(
            "figures/fig3.pdf.provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
        equivalent_k=report(
            ttt_table_file("equivalent_k.json"),
            caption="../report/captions/equivalent_k.rst",
            category="Analyses",
        ),
    log:
        "results/logs/fig3.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        style=cfg("figures", "fig3"),
        code=code("fig3"),
    script:
        "../workflow_scripts/fig3.py"


rule fig5:
    """Figure 5: TTT trajectories of the main runs with BoA stars."""
    input:
        table=ttt_table_file("table6.csv"),
        selection=ttt_table_file("table6_selection.csv"),
        table_provenance=ttt_table_file("table6.csv.provenance.json"),
    output:
        figure=report(
            "figures/fig5.pdf",
            caption="../report/captions/fig5.rst",
            category="Figures",
        ),
        provenance=report(
            "figures/fig5.pdf.provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/fig5.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="fig5",
        style=cfg("figures", "fig5"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule fig6:
    """Figure 6: NLL probe, Spearman rho(NLL, speedup) per TTT step, overall and bottom quartile."""
    input:
        unpack(fig6_input),
    output:
        figure=report(
            "figures/fig6.pdf",
            caption="../report/captions/fig6.rst",
            category="Figures",
        ),
        provenance=report(
            "figures/fig6.pdf.provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/fig6.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="fig6",
        style=cfg("figures", "fig6"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule fig1:
    """Figure 1 (teaser): Best-of-N scaling with the strategies' fast_1 and TTT BoA at the largest K."""
    input:
        table2=table_file(RUN["model"], RUN["suite"], "table2.csv"),
        table3=table_file(RUN["model"], RUN["suite"], "table3.csv"),
        table_provenance=table_file(RUN["model"], RUN["suite"], "table3.csv.provenance.json"),
        ttt=ttt_table_file("table6_summary.json"),
    output:
        figure=report("figures/fig1.pdf", caption="../report/captions/fig1.rst", category="Figures"),
        provenance="figures/fig1.pdf.provenance.json",
    log:
        "results/logs/fig1.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="fig1",
        style=cfg("figures", "fig1"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule fig7:
    """Figure 7: BoA benefit over Best-of-N against base coverage per task (regime dependence, D17)."""
    input:
        unpack(fig7_input),
    output:
        figure=report("figures/fig7.pdf", caption="../report/captions/fig7.rst", category="Figures"),
        provenance="figures/fig7.pdf.provenance.json",
    log:
        "results/logs/fig7.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="fig7",
        style={**cfg("figures", "fig7"), **fig7_spec()},
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule deployable_selection_figure:
    """Open question 2: fast_1 and evaluator calls against m per evaluation order."""
    input:
        table=table_file("{model}", "{suite}", "deployable_selection.csv"),
        table_provenance=table_file("{model}", "{suite}", "deployable_selection.csv.provenance.json"),
    output:
        figure=report(
            deployable_figure_file("{model}", "{suite}"),
            caption="../report/captions/deployable_selection_figure.rst",
            category="Figures",
            subcategory="Open questions",
        ),
        provenance=deployable_figure_file("{model}", "{suite}") + ".provenance.json",
    log:
        "results/logs/deployable_selection_figure/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="deployable_selection",
        style=cfg("figures", "deployable_selection"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule ttt_remedies_figure:
    """Open question 1: trajectory and NLL probe of the paper's TTT run and its regularised variants."""
    input:
        table=ttt_table_file("remedies.csv"),
        table_provenance=ttt_table_file("remedies.csv.provenance.json"),
    output:
        figure=report(
            "figures/open_questions/ttt_remedies.pdf",
            caption="../report/captions/ttt_remedies_figure.rst",
            category="Figures",
            subcategory="Open questions",
        ),
        provenance="figures/open_questions/ttt_remedies.pdf.provenance.json",
    log:
        "results/logs/ttt_remedies_figure.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="ttt_remedies",
        style=cfg("figures", "ttt_remedies"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"


rule reward_sparsification_figure:
    """Open question 3: TTT trajectories with the normalised and the sparse fast_1 reward."""
    input:
        table=ttt_table_file("reward_sparsification.csv"),
        table_provenance=ttt_table_file("reward_sparsification.csv.provenance.json"),
    output:
        figure=report(
            "figures/open_questions/reward_sparsification.pdf",
            caption="../report/captions/reward_sparsification_figure.rst",
            category="Figures",
            subcategory="Open questions",
        ),
        provenance="figures/open_questions/reward_sparsification.pdf.provenance.json",
    log:
        "results/logs/reward_sparsification_figure.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="reward_sparsification",
        style=cfg("figures", "reward_sparsification"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"
