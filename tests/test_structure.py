"""The workflow's structure: derived code hashes, light parse-time imports, the strategy registry."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from testtime import selection
from testtime.codehash import import_closure, script_code_hash


def closure(script: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in import_closure(ROOT / "workflow_scripts" / f"{script}.py", ROOT)}


def test_closure_follows_indirect_imports():
    ttt = closure("ttt_step")
    # ttt_step -> testtime.ttt.step -> testtime.pg.rollouts -> testtime.pg.rewards -> testtime.analysis (fast_1)
    assert "testtime/analysis.py" in ttt
    # the evaluation subprocess's module and the evaluator it runs
    assert {"testtime/evaluation/isolated.py", "testtime/evaluation/batch.py", "testtime/evaluation/worker.py"} <= ttt
    # packages on the way and the script's own helper module
    assert {"testtime/__init__.py", "testtime/ttt/__init__.py", "workflow_scripts/_common.py"} <= ttt
    # nothing the step does not import
    assert "testtime/figures.py" not in ttt and "testtime/tables.py" not in ttt


def test_declared_data_is_hashed_with_its_code():
    files = closure("prepare_tasks")
    assert any(f.startswith("testtime/tasks/bundled/") for f in files)
    assert not any(f.startswith("testtime/tasks/bundled/") for f in closure("select_samples"))


def test_code_hash_changes_with_an_indirect_module(tmp_path):
    import shutil

    for sub in ("testtime", "workflow_scripts"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: script_code_hash(tmp_path / "workflow_scripts" / f"{s}.py", tmp_path) for s in ("ttt_step", "fig3", "evaluate")}
    with open(tmp_path / "testtime/analysis.py", "a") as f:
        f.write("\n# an edit\n")
    import testtime.codehash as ch

    ch._closure.cache_clear()
    after = {s: script_code_hash(tmp_path / "workflow_scripts" / f"{s}.py", tmp_path) for s in before}
    assert after["ttt_step"] != before["ttt_step"] and after["fig3"] != before["fig3"]
    assert after["evaluate"] == before["evaluate"]  # evaluation never imports analysis


def test_parsing_the_workflow_imports_no_heavy_module():
    """What rules/common.smk and the Snakefile import at parse time stays light."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import testtime.config, testtime.runs, testtime.codehash, testtime.retrieve\n"
        "print(sorted(m for m in ('torch', 'scipy', 'pandas', 'numpy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_registered_strategy_reaches_table3_and_the_figure(tmp_path, monkeypatch):
    """A sixth strategy is one Strategy in testtime/selection.py: selection, Table 3 and Figure 4
    pick it up from the registry."""
    from testtime.figures import fig4

    monkeypatch.setattr(selection, "REGISTRY", dict(selection.REGISTRY))
    selection.register(
        selection.Strategy(
            "median-surprisal",
            lambda c: selection.at(c, int(np.argsort(c.score)[len(c.score) // 2])),
            "Median",
            "#123456",
            "zero",
        )
    )
    records = pd.DataFrame(
        {
            "seed": 1,
            "problem_id": 7,
            "sample_index": range(5),
            "correct": [True, True, False, True, True],
            "speedup": [1.5, 0.9, 0.0, 2.0, 1.1],
            "lp_mean": [-0.1, -0.5, -0.2, -0.9, -0.3],
        }
    )
    table, summary, _ = selection.select_records(records, score="lp_mean")
    row = table.set_index("strategy").loc["median-surprisal"]
    assert row["sample_index"] == 4 and row["fast_1"] == 1.0  # scores of C sorted: -0.9, -0.5, -0.3, -0.1
    assert list(summary["strategy"]) == [*selection.strategy_names()] and summary["strategy"].iloc[-1] == "median-surprisal"
    fig4(summary, tmp_path / "fig4.pdf", {}, {"config_hash": "x"})
    assert (tmp_path / "fig4.pdf").read_bytes().startswith(b"%PDF")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        selection.register(selection.REGISTRY["best-correct"])


def test_every_figure_and_table_output_has_a_report_caption():
    """snakemake --report shows only what a rule marks: every `figure=` and `table=` output is
    wrapped in report(...) with a caption file that exists, and no caption file is unused."""
    used, unmarked = set(), []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.findall(r"^    output:\n((?: {8}.*\n)*)", text, re.M):
            unmarked += [
                f"{smk.name}: {line.strip()}" for line in re.findall(r"^ {8}(?:figure|table)=(?!report\().*$", block, re.M)
            ]
        for caption in re.findall(r'caption="\.\./(report/captions/[\w.]+\.rst)"', text):
            assert (ROOT / caption).is_file(), caption
            used.add(caption)
    assert unmarked == []
    assert used == {str(p.relative_to(ROOT)) for p in (ROOT / "report" / "captions").glob("*.rst")}
