rule fig4:
    input:
        table=f"results/tables/{RUN['model']}/{RUN['suite']}/table3.csv",
        table_provenance=f"results/tables/{RUN['model']}/{RUN['suite']}/table3.csv.provenance.json",
    output:
        figure="figures/fig4.pdf",
        provenance="figures/fig4.pdf.provenance.json",
    log:
        "results/logs/fig4.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        style=cfg("figures", "fig4"),
        code=code("testtime/figures.py"),
    script:
        "../workflow_scripts/fig4.py"




rule fig3:
    """Best-of-N scaling with the TTT BoA line and its equivalent K."""
    input:
        table=f"results/tables/{RUN['model']}/{RUN['suite']}/table2.csv",
        table_provenance=f"results/tables/{RUN['model']}/{RUN['suite']}/table2.csv.provenance.json",
        ttt="results/tables/ttt/table6_summary.json",
    output:
        figure="figures/fig3.pdf",
        provenance="figures/fig3.pdf.provenance.json",
        equivalent_k="results/tables/ttt/equivalent_k.json",
    log:
        "results/logs/fig3.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        style=cfg("figures", "fig3"),
        code=code("testtime/figures.py", "testtime/tables.py", "testtime/analysis.py"),
    script:
        "../workflow_scripts/fig3.py"


rule fig5:
    """TTT trajectories of the main runs with BoA stars."""
    input:
        table="results/tables/ttt/table6.csv",
        selection="results/tables/ttt/table6_selection.csv",
        table_provenance="results/tables/ttt/table6.csv.provenance.json",
    output:
        figure="figures/fig5.pdf",
        provenance="figures/fig5.pdf.provenance.json",
    log:
        "results/logs/fig5.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        style=cfg("figures", "fig5"),
        code=code("testtime/figures.py"),
    script:
        "../workflow_scripts/fig5.py"


rule fig6:
    """NLL probe: Spearman rho(NLL, speedup) per TTT step, overall and bottom quartile."""
    input:
        unpack(fig6_input),
    output:
        figure="figures/fig6.pdf",
        provenance="figures/fig6.pdf.provenance.json",
    log:
        "results/logs/fig6.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        style=cfg("figures", "fig6"),
        code=code("testtime/figures.py"),
    script:
        "../workflow_scripts/fig6.py"
