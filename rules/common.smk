"""Helpers shared by all rules: config access, code hashes, path functions."""

import os

from testtime.config import canonical, code_hash
from testtime.ttt import resolve_run, step_settings


wildcard_constraints:
    model=r"[A-Za-z0-9_.\-]+",
    suite=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
    run=r"[A-Za-z0-9_.\-]+",
    step=r"\d+",
    name=r"[A-Za-z0-9_.\-]+",


def cfg(*path):
    """A config subset, key-sorted so reordering YAML never reruns anything."""
    node = config
    for key in path:
        node = node[key]
    return canonical(node)


def code(*paths):
    """Content hash of the library files a rule runs, so editing them reruns that rule."""
    return code_hash(*(os.path.join(workflow.basedir, p) for p in paths))


def model_dir_input(model):
    """The materialised model directory, or nothing when the model is used in place."""
    return [f"results/models/{model}"] if config["models"][model]["materialize"] else []


def model_dir_path(model):
    spec = config["models"][model]
    return f"results/models/{model}" if spec["materialize"] else spec["source"]


def model_input(wildcards):
    return model_dir_input(wildcards.model)


def model_path(wildcards):
    return model_dir_path(wildcards.model)


RUN = config["run"]
SEEDS = RUN["seeds"]


# ---------------------------------------------------------------- scheduling (config `resources`)
# Every rule takes its threads and resources from its stage's section, so profiles/slurm and
# profiles/workstation schedule the same DAG from one place. Rules of stages added later
# (training, probes) call these with their stage name.


def stage_threads(stage):
    """CPU threads of a stage's jobs."""
    return config["resources"][stage]["threads"]


def stage_resources(stage):
    """Snakemake resources of a stage's jobs: memory and runtime grow with the retry attempt; a
    GPU (and its model, and a partition) is requested only where the stage asks for one."""
    spec = config["resources"][stage]
    res = {
        "mem_mb": lambda wildcards, attempt: spec["mem_mb"] * attempt,
        "runtime": lambda wildcards, attempt: spec["runtime"] * attempt,
    }
    if spec["gpus"] > 0:
        res["gpu"] = spec["gpus"]
        if spec["gpu_model"]:
            res["gpu_model"] = spec["gpu_model"]
    if spec["slurm_partition"]:
        res["slurm_partition"] = spec["slurm_partition"]
    return res


EXPERIMENTS = config["ttt"]["experiments"]
PROBE = config["probe"]


# Test-time training, probe and TTT tables: run settings and the paths of their steps.


def ttt_run(name):
    try:
        return canonical(resolve_run(config, name))
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def ttt_step_dir(name, step):
    return f"results/ttt/{name}/step{step}"


def ttt_metrics(name):
    """metrics.json of every step 0..S of a run."""
    return [f"{ttt_step_dir(name, s)}/metrics.json" for s in range(ttt_run(name)["steps"] + 1)]


def ttt_adapters(name):
    return [f"{ttt_step_dir(name, s)}/adapter" for s in range(ttt_run(name)["steps"] + 1)]


def ttt_sampling():
    """What TTT takes from `sampling`: how to prompt and decode (not K, backend or device)."""
    return {key: config["sampling"][key] for key in ("max_new_tokens", "prompt_variant", "temperature")}


def ttt_step_input(wc):
    run = ttt_run(wc.run)
    step = int(wc.step)
    inputs = {
        "tasks": f"results/tasks/{run['suite']}/tasks.parquet",
        "split": f"results/tasks/{run['suite']}/split.json",
        "model": model_dir_input(run["model"]),
    }
    if step > 0:
        prev = ttt_step_dir(wc.run, step - 1)
        inputs.update(
            adapter=f"{prev}/adapter",
            optimizer=f"{prev}/optimizer.pt",
            rollouts=f"{prev}/rollouts.parquet",
            evaluations=f"{prev}/evaluations.parquet",
            metrics=f"{prev}/metrics.json",
        )
    return inputs


def transfer_spec(name):
    spec = config["ttt"]["experiments"]["transfer"].get(name)
    if spec is None:
        raise WorkflowError(f"config key 'ttt.experiments.transfer.{name}': no such transfer")
    return spec


def transfer_input(wc):
    spec = transfer_spec(wc.name)
    target = ttt_run(spec["target"])
    if ttt_run(spec["source"])["model"] != target["model"]:
        raise WorkflowError(f"config key 'ttt.experiments.transfer.{wc.name}': source and target runs use different models")
    return {
        "tasks": f"results/tasks/{target['suite']}/tasks.parquet",
        "split": f"results/tasks/{target['suite']}/split.json",
        "model": model_dir_input(target["model"]),
        "adapter": f"{ttt_step_dir(spec['source'], spec['step'])}/adapter",
    }


def probe_run(wc):
    run = ttt_run(wc.run)
    if (run["model"], run["suite"]) != (RUN["model"], RUN["suite"]):
        raise WorkflowError(
            f"config key 'probe.run': run {wc.run!r} adapts {run['model']}/{run['suite']}, but the Best-of-N "
            f"samples are {RUN['model']}/{RUN['suite']} (run.model/run.suite)"
        )
    return run


def probe_input(wc):
    run = probe_run(wc)
    bon = f"{run['model']}/{run['suite']}/seed{wc.seed}"
    return {
        "samples": f"results/samples/{bon}.parquet",
        "tasks": f"results/tasks/{run['suite']}/tasks.parquet",
        "model": model_dir_input(run["model"]),
        "adapters": ttt_adapters(wc.run),
        "metrics": ttt_metrics(wc.run)[-1],
    }


def experiment_runs(key):
    runs = EXPERIMENTS[key]
    if not runs:
        raise WorkflowError(f"config key 'ttt.experiments.{key}' lists no run; this table needs some")
    return runs


def metrics_of(runs):
    return [path for run in runs for path in ttt_metrics(run)]


def table4_input(wc):
    spec = EXPERIMENTS["subset2"]
    if not spec:
        raise WorkflowError("config key 'ttt.experiments.subset2' is null; Table 4 needs a Subset 2 run")
    run = ttt_run(spec["run"])
    return {
        "metrics": ttt_metrics(spec["run"]),
        "bon": f"results/evaluations/{run['model']}/{run['suite']}/seed{spec['bon_seed']}.parquet",
    }


def transfer_table_input(wc):
    spec = EXPERIMENTS["transfer"]
    if not spec:
        raise WorkflowError("config key 'ttt.experiments.transfer' lists no transfer")
    runs = sorted({s["source"] for s in spec.values()} | {s["target"] for s in spec.values()})
    return {"transfers": [f"results/ttt/transfer/{n}/metrics.json" for n in spec], "metrics": metrics_of(runs)}


def fig6_input(wc):
    if not PROBE["run"]:
        raise WorkflowError("config key 'probe.run' is null; Figure 6 needs the TTT run to probe")
    table = f"results/tables/probes/{PROBE['run']}/seed{PROBE['seed']}/probe.csv"
    return {"table": table, "table_provenance": f"{table}.provenance.json"}
