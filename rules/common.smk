"""Helpers shared by all rules: config access, code hashes, path functions."""

import os

from testtime.config import canonical, code_hash


wildcard_constraints:
    model=r"[A-Za-z0-9_.\-]+",
    suite=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",


def cfg(*path):
    """A config subset, key-sorted so reordering YAML never reruns anything."""
    node = config
    for key in path:
        node = node[key]
    return canonical(node)


def code(*paths):
    """Content hash of the library files a rule runs, so editing them reruns that rule."""
    return code_hash(*(os.path.join(workflow.basedir, p) for p in paths))


def model_input(wildcards):
    """The materialised model directory, or nothing when the model is used in place."""
    if config["models"][wildcards.model]["materialize"]:
        return f"results/models/{wildcards.model}"
    return []


def model_path(wildcards):
    spec = config["models"][wildcards.model]
    return f"results/models/{wildcards.model}" if spec["materialize"] else spec["source"]


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
