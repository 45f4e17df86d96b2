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
