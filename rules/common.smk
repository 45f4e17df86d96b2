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
