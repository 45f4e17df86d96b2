"""Shared by all rules: config access, code hashes, path templates, models, scheduling resources,
and the input functions of rules, grouped by the stage file that uses them (snakemake --lint
asks for functions here, not mixed with rules). Light imports only: no torch, scipy or pandas
while Snakemake parses the workflow.
"""

import os
import re

from testtime.codehash import script_code_hash
from testtime.config import canonical
from testtime.retrieve import is_remote, parse_source
from testtime.runs import (
    checkpoint_steps,
    resolve_checkpoint,
    resolve_rlvr_run,
    resolve_run,
    rlvr_step_settings,
    resolve_sdpo_run,
    sdpo_seed_suite,
    sdpo_step_settings,
    step0_owners,
    step_settings,
)


wildcard_constraints:
    model=r"[A-Za-z0-9_.\-]+",
    suite=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
    run=r"[A-Za-z0-9_.\-]+",
    step=r"\d+",
    name=r"[A-Za-z0-9_.\-]+",
    host=r"hf|github",
    owner=r"[A-Za-z0-9_.\-]+",
    repo=r"[A-Za-z0-9_.\-]+",
    revision=r"[A-Za-z0-9_.\-]+",
    variant=r"feedback|prompt_only",


RUN = config["run"]
SEEDS = RUN["seeds"]
EXPERIMENTS = config["ttt"]["experiments"]
# TTT runs whose step 0 is an earlier run's (ttt.share_step0): run -> that run (rule ttt_step0_shared)
STEP0_OWNERS = step0_owners(config)
PROBE = config["probe"]


def cfg(*path):
    """A config subset, key-sorted so reordering YAML never reruns anything."""
    node = config
    for key in path:
        node = node[key]
    return canonical(node)


def code(script):
    """Content hash of a workflow script and every library file it imports (testtime.codehash),
    so editing any of them reruns exactly the rules that run it."""
    path = os.path.join(workflow.basedir, "workflow_scripts", f"{script}.py")
    return script_code_hash(path, workflow.basedir)


# ---------------------------------------------------------------- path templates
# Each record's path is written once here; rules pass wildcards ("{suite}") or values.


def tasks_file(suite):
    return f"results/tasks/{suite}/tasks.parquet"


def split_file(suite):
    return f"results/tasks/{suite}/split.json"


def samples_file(model, suite, seed):
    return f"results/samples/{model}/{suite}/seed{seed}.parquet"


def evaluations_file(model, suite, seed):
    return f"results/evaluations/{model}/{suite}/seed{seed}.parquet"


def table_file(model, suite, name):
    """A Best-of-N table of one model and suite, e.g. table_file(m, s, "table3.csv")."""
    return f"results/tables/{model}/{suite}/{name}"


def deployable_figure_file(model, suite):
    """Open question 2's figure of one model and suite."""
    return f"figures/open_questions/{model}/{suite}/deployable_selection.pdf"


def ttt_table_file(name):
    return f"results/tables/ttt/{name}"


def ttt_step_dir(run, step):
    return f"results/ttt/{run}/step{step}"


def ttt_step_file(run, step, name):
    """A file of one TTT step, e.g. ttt_step_file("{run}", "{step}", "metrics.json")."""
    return f"{ttt_step_dir(run, step)}/{name}"


# ---------------------------------------------------------------- remote sources (rules/retrieve.smk)
# An hf:/github: source is fetched by the retrieve rules (the only ones that touch the network)
# and everything downstream reads the local copy; other sources never plan a retrieve job.


def remote_source(registry, name):
    """The parsed hf:/github: source of `models.<name>` or `suites.<name>`, or None when local."""
    source = config[registry][name]["source"]
    if not is_remote(source):
        return None
    try:
        parsed = parse_source(source)
    except ValueError as err:
        raise WorkflowError(f"config key '{registry}.{name}.source': {err}") from None
    if registry == "models" and parsed.host != "hf":
        raise WorkflowError(f"config key 'models.{name}.source': model weights come from 'hf:ORG/NAME[@REVISION]'")
    return parsed


def retrieved_model_dir(model):
    """Where retrieve_model exposes an hf: model (links into the download cache)."""
    return f"results/retrieve/models/{model}"


def retrieved_suite_file(source):
    """Where retrieve_suite writes a hf:/github: suite, one file per source and revision."""
    return "results/retrieve/suites/{0.host}/{0.owner}/{0.repo}/{0.revision}.parquet".format(source)


def retrieve_cache_dir(wildcards, output):
    """retrieve.cache_dir. Taking `output` keeps this param out of Snakemake's change tracking:
    where the cache lives changes no result, so moving it reruns nothing."""
    return config["retrieve"]["cache_dir"]


def retrieved_model_source(wc):
    """The hf: source a retrieve_model job fetches (normalised: a missing revision is 'main')."""
    source = remote_source("models", wc.model)
    if source is None:
        raise WorkflowError(f"config key 'models.{wc.model}.source': not an 'hf:' source, nothing to retrieve")
    return str(source)


def retrieved_source(wc):
    """The source a retrieve_suite job fetches, rebuilt from its output path."""
    return f"{wc.host}:{wc.owner}/{wc.repo}@{wc.revision}"


def suite_input(wc):
    """prepare_tasks reads a remote suite from its retrieved parquet file."""
    source = remote_source("suites", wc.suite)
    return {"source": retrieved_suite_file(source)} if source else {}


def suite_params(suite):
    """A suite's config as prepare_tasks reads it: a hf:/github: source is replaced by its
    retrieved file (`retrieved_from` keeps the source); local sources pass unchanged."""
    spec = cfg("suites", suite)
    source = remote_source("suites", suite)
    if source is None:
        return spec
    return canonical({**spec, "source": retrieved_suite_file(source), "retrieved_from": spec["source"]})


# ---------------------------------------------------------------- models


def model_load_path(model):
    """Where a model's weights are read from: its retrieved directory for an hf: source, else the
    configured source."""
    return retrieved_model_dir(model) if remote_source("models", model) else config["models"][model]["source"]


def retrieved_model_input(model):
    return [retrieved_model_dir(model)] if remote_source("models", model) else []


def model_dir_input(model):
    """The materialised model directory, the retrieved one when an hf: model is used in place,
    or nothing (a local source used in place)."""
    return [f"results/models/{model}"] if config["models"][model]["materialize"] else retrieved_model_input(model)


def model_dir_path(model):
    return f"results/models/{model}" if config["models"][model]["materialize"] else model_load_path(model)


# ---------------------------------------------------------------- scheduling (config `resources`)
# Every rule takes its threads and resources from its stage's section, so profiles/slurm and
# profiles/workstation schedule the same DAG from one place.


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


# ---------------------------------------------------------------- TTT runs (ttt, probes, tables)


def ttt_run(name):
    """A TTT run's complete settings (testtime.runs), key-sorted."""
    try:
        return canonical(resolve_run(config, name))
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def ttt_metrics(name):
    """metrics.json of every step 0..S of a run."""
    return [f"{ttt_step_dir(name, s)}/metrics.json" for s in range(ttt_run(name)["steps"] + 1)]


def metrics_of(runs):
    return [path for run in runs for path in ttt_metrics(run)]


def ttt_sampling():
    """What TTT and RLVR take from `sampling`: how to prompt and decode (not K or device), and the
    engine when it is vLLM."""
    return {**{key: config["sampling"][key] for key in ("max_new_tokens", "prompt_variant", "temperature")}, **rollout_backend()}


def rollout_backend():
    """`sampling.backend` (and `sampling.vllm`) for the jobs that sample or score a training run
    (TTT, RLVR, the probe): {} for transformers, so that the default's params, config hashes and
    finished jobs stay as they were; vLLM's rollouts are other samples, so its jobs rerun."""
    if config["sampling"]["backend"] == "transformers":
        return {}
    return {key: config["sampling"][key] for key in ("backend", "vllm") if key in config["sampling"]}


# ---------------------------------------------------------------- input functions of TTT steps and transfers (rules/ttt.smk)


def ttt_step_input(wc):
    """Step 0 starts from the model; step s > 0 also reads step s-1's adapter, Adam state,
    rollouts, evaluations and metrics."""
    run = ttt_run(wc.run)
    if run.get("kl_to_start") and ttt_start(wc.run)["lora"] == "continued":
        # the update scores the starting policy with the LoRA disabled, which is p_0 only for a fresh LoRA
        raise WorkflowError(
            f"config key 'ttt.runs.{wc.run}.kl_to_start': the KL penalty needs a run whose LoRA starts fresh; "
            "this run continues the trained checkpoint's adapter (set ttt.init: fresh)"
        )
    step = int(wc.step)
    inputs = {"tasks": tasks_file(run["suite"]), "split": split_file(run["suite"]), "model": model_dir_input(run["model"])}
    if step > 0:
        prev = ttt_step_dir(wc.run, step - 1)
        inputs.update(
            adapter=f"{prev}/adapter",
            optimizer=f"{prev}/optimizer.pt",
            rollouts=f"{prev}/rollouts.parquet",
            evaluations=f"{prev}/evaluations.parquet",
            metrics=f"{prev}/metrics.json",
        )
    inputs.update(ttt_checkpoint_input(wc.run, step))
    return inputs


def step0_shared_runs():
    """The wildcard pattern of the runs whose step 0 is shared (rule ttt_step0_shared), or one
    that matches no run."""
    return "|".join(re.escape(run) for run in STEP0_OWNERS) or "(?!)"


def ttt_step0_shared_input(wc):
    """Step 0's files of the run whose step 0 this run takes."""
    owner = STEP0_OWNERS[wc.run]
    return {key: ttt_step_file(owner, 0, name) for key, name in STEP0_FILES.items()}


#: A TTT step's outputs by name (rule ttt_step), as ttt_step0_shared copies them.
STEP0_FILES = {
    "adapter": "adapter",
    "optimizer": "optimizer.pt",
    "rollouts": "rollouts.parquet",
    "evaluations": "evaluations.parquet",
    "metrics": "metrics.json",
}


def ttt_merge_input(name):
    """The trained checkpoint's adapter when TTT run `name` put a fresh LoRA on top of it (every
    job loading the run's adapters merges it first), else nothing."""
    return ttt_checkpoint_input(name, 1)


def transfer_spec(name):
    spec = config["ttt"]["experiments"]["transfer"].get(name)
    if spec is None:
        raise WorkflowError(f"config key 'ttt.experiments.transfer.{name}': no such transfer")
    return spec


def transfer_target(wc):
    return ttt_run(transfer_spec(wc.name)["target"])


def transfer_input(wc):
    spec = transfer_spec(wc.name)
    target = ttt_run(spec["target"])
    if ttt_run(spec["source"])["model"] != target["model"]:
        raise WorkflowError(f"config key 'ttt.experiments.transfer.{wc.name}': source and target runs use different models")
    return {
        "tasks": tasks_file(target["suite"]),
        "split": split_file(target["suite"]),
        "model": model_dir_input(target["model"]),
        "adapter": f"{ttt_step_dir(spec['source'], spec['step'])}/adapter",
        **ttt_merge_input(spec["source"]),
    }


# ---------------------------------------------------------------- input functions of the NLL probe (rules/probes.smk)


def probe_run(wc):
    """The probed TTT run, which must adapt the model and suite of the Best-of-N samples."""
    return probed_run(wc.run)


def probed_run(name, key="probe.run"):
    """TTT run `name`'s settings, checked to adapt run.model on run.suite (`key` names the config
    key that asked for its probe)."""
    run = ttt_run(name)
    if (run["model"], run["suite"]) != (RUN["model"], RUN["suite"]):
        raise WorkflowError(
            f"config key '{key}': run {name!r} adapts {run['model']}/{run['suite']}, but the Best-of-N "
            f"samples are {RUN['model']}/{RUN['suite']} (run.model/run.suite)"
        )
    return run


def probe_input(wc):
    run = probe_run(wc)
    steps = range(run["steps"] + 1)
    return {
        "samples": samples_file(run["model"], run["suite"], wc.seed),
        "tasks": tasks_file(run["suite"]),
        "model": model_dir_input(run["model"]),
        "adapters": [f"{ttt_step_dir(wc.run, s)}/adapter" for s in steps],
        "metrics": ttt_metrics(wc.run)[-1],
        **ttt_merge_input(wc.run),
    }


# ---------------------------------------------------------------- input functions of TTT tables (rules/analysis.smk)


def experiment_runs(key):
    runs = EXPERIMENTS[key]
    if not runs:
        raise WorkflowError(f"config key 'ttt.experiments.{key}' lists no run; this table needs some")
    return runs


def table4_input(wc):
    spec = EXPERIMENTS["subset2"]
    if not spec:
        raise WorkflowError("config key 'ttt.experiments.subset2' is null; Table 4 needs a Subset 2 run")
    run = ttt_run(spec["run"])
    return {"metrics": ttt_metrics(spec["run"]), "bon": evaluations_file(run["model"], run["suite"], spec["bon_seed"])}


def transfer_table_input(wc):
    spec = EXPERIMENTS["transfer"]
    if not spec:
        raise WorkflowError("config key 'ttt.experiments.transfer' lists no transfer")
    runs = sorted({s["source"] for s in spec.values()} | {s["target"] for s in spec.values()})
    return {"transfers": [f"results/ttt/transfer/{n}/metrics.json" for n in spec], "metrics": metrics_of(runs)}


def probe_table_file(run, seed):
    """The NLL probe table of TTT run `run` on the Best-of-N samples of `seed`."""
    return f"results/tables/probes/{run}/seed{seed}/probe.csv"


def comparison_input(key):
    """The open questions' TTT comparisons (`ttt.experiments.remedies`, `reward_sparsification`):
    every step's metrics of the compared runs; for the remedies also each run's NLL probe on the
    Best-of-N samples of probe.seed."""
    runs = experiment_runs(key)
    inputs = {"metrics": metrics_of(runs)}
    if key == "remedies":
        for run in runs:
            probed_run(run, "ttt.experiments.remedies")  # the probe needs run.model/run.suite
        inputs["probes"] = [probe_table_file(run, PROBE["seed"]) for run in runs]
        inputs["probe_provenance"] = [f"{probe_table_file(run, PROBE['seed'])}.provenance.json" for run in runs]
    return inputs


def remedies_input(wc):
    return comparison_input("remedies")


def sparsification_input(wc):
    return comparison_input("reward_sparsification")


def comparison_spec(key):
    """What a comparison table depends on besides its inputs: the runs in order and the
    early-stop patience (and for the remedies the probed Best-of-N seed)."""
    spec = {"runs": EXPERIMENTS[key], "patience": EXPERIMENTS["early_stop_patience"]}
    return {**spec, "probe_seed": PROBE["seed"]} if key == "remedies" else spec


# ---------------------------------------------------------------- input functions of figures (rules/figures.smk)


def fig6_input(wc):
    if not PROBE["run"]:
        raise WorkflowError("config key 'probe.run' is null; Figure 6 needs the TTT run to probe")
    table = f"results/tables/probes/{PROBE['run']}/seed{PROBE['seed']}/probe.csv"
    return {"table": table, "table_provenance": f"{table}.provenance.json"}


# ---------------------------------------------------------------- RLVR runs and the checkpoint (rules/rlvr.smk, sampling, TTT, probes)


def rlvr_run(name):
    """An RLVR run's complete settings (testtime.runs), key-sorted."""
    try:
        return canonical(resolve_rlvr_run(config, name))
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def rlvr_step_dir(model, run, step):
    return f"results/rlvr/{model}/{run}/step{step}"


def rlvr_step_file(model, run, step, name):
    """A file of one RLVR step, e.g. rlvr_step_file("{model}", "{run}", "{step}", "metrics.json")."""
    return f"{rlvr_step_dir(model, run, step)}/{name}"


def rlvr_table_file(model, suite, run):
    """Table 5 of one RLVR run: table_file(model, suite, "rlvr/{run}/table5.csv")."""
    return table_file(model, suite, f"rlvr/{run}/table5.csv")


def rlvr_curve_file(model, run):
    return f"figures/rlvr/{model}/{run}/curve.pdf"


def rlvr_targets():
    """Table 5 and the training curve of every configured RLVR run (rule rlvr_all)."""
    out = []
    for name in config["rlvr"]["runs"]:
        run = rlvr_run(name)
        out += [rlvr_table_file(run["model"], run["suite"], name), rlvr_curve_file(run["model"], name)]
    return out


def rlvr_checked(wc):
    """The RLVR run of a path, whose model (and suite, for tables) must be the path's."""
    run = rlvr_run(wc.run)
    if run["model"] != wc.model or ("suite" in wc.keys() and run["suite"] != wc.suite):
        where = f"{run['model']}/{run['suite']}"
        raise WorkflowError(f"RLVR run {wc.run!r} trains {where}; its outputs live under results/rlvr/{run['model']}/")
    return run


def rlvr_step_input(wc):
    """Step 0 starts from the model; step s > 0 also reads step s-1's files."""
    run = rlvr_checked(wc)
    step = int(wc.step)
    inputs = {"tasks": tasks_file(run["suite"]), "split": split_file(run["suite"]), "model": model_dir_input(run["model"])}
    if step > 0:
        prev = rlvr_step_dir(wc.model, wc.run, step - 1)
        inputs.update(
            adapter=f"{prev}/adapter",
            optimizer=f"{prev}/optimizer.pt",
            rollouts=f"{prev}/rollouts.parquet",
            evaluations=f"{prev}/evaluations.parquet",
            metrics=f"{prev}/metrics.json",
        )
    return inputs


def rlvr_table_input(wc):
    run = rlvr_checked(wc)
    return [rlvr_step_file(wc.model, wc.run, s, "metrics.json") for s in range(run["steps"] + 1)]


def checkpoint_for(model):
    """The checkpoint (config `checkpoint`, testtime.runs.resolve_checkpoint) used where `model` is
    sampled, adapted or probed: the configured one for run.model, the plain model otherwise."""
    if model != RUN["model"]:
        return {"use": "base", "model": model}
    try:
        return canonical(resolve_checkpoint(config))
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def checkpoint_adapter(model):
    """The trained checkpoint's adapter directory ([] unless `checkpoint.use: trained`)."""
    ck = checkpoint_for(model)
    if ck["use"] != "trained":
        return []
    run = rlvr_run(ck["rlvr_run"])
    return [f"{rlvr_step_dir(run['model'], ck['rlvr_run'], ck['adapter_step'])}/adapter"]


def ttt_start(name):
    """Where TTT run `name` starts (§9.1): the checkpoint, and whether its LoRA is continued
    (`ttt.init: checkpoint` on a trained adapter) or a fresh LoRA goes on top of it."""
    run = ttt_run(name)
    ck = checkpoint_for(run["model"])
    continues = ck["use"] == "trained" and run["init"] == "checkpoint"
    return {
        **ck,
        "init": run["init"],
        "lora": "continued" if continues else "fresh",
        "adam": run["init_optimizer"] if continues else "fresh",
    }


def ttt_checkpoint_input(name, step):
    """A TTT step's checkpoint files: the adapter to continue (step 0) or to merge (every step,
    fresh LoRA on a trained checkpoint), and the Adam state to continue (step 0)."""
    start = ttt_start(name)
    adapter = checkpoint_adapter(ttt_run(name)["model"])
    if not adapter or (start["lora"] == "continued" and step > 0):
        return {}
    inputs = {"checkpoint_adapter": adapter[0]}
    if step == 0 and start["adam"] == "checkpoint":
        inputs["checkpoint_optimizer"] = adapter[0].removesuffix("adapter") + "optimizer.pt"
    return inputs


# ---------------------------------------------------------------- SDPO runs and Table 9 (rules/sdpo.smk)


def sdpo_step_dir(model, suite, variant, seed, step):
    return f"results/sdpo/{model}/{suite}/{variant}/seed{seed}/step{step}"


def sdpo_step_file(model, suite, variant, seed, step, name):
    """A file of one SDPO step, e.g. sdpo_step_file("{model}", "{suite}", "{variant}", "{seed}", "{step}", "metrics.json")."""
    return f"{sdpo_step_dir(model, suite, variant, seed, step)}/{name}"


def sdpo_table_file(model, suite):
    """Table 9 of one model and suite: table_file(model, suite, "sdpo/table9.csv")."""
    return table_file(model, suite, "sdpo/table9.csv")


def sdpo_run(wc):
    """The SDPO run of a step path (testtime.runs.resolve_sdpo_run), key-sorted."""
    try:
        return canonical(resolve_sdpo_run(config, wc.model, wc.suite, wc.variant, int(wc.seed)))
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def sdpo_start(model):
    """Where an SDPO run starts: the checkpoint (§10.1: as TTT, the trained adapter continued
    with a fresh Adam; a fresh LoRA on a base or fetched model)."""
    ck = checkpoint_for(model)
    return {**ck, "lora": "continued" if ck["use"] == "trained" else "fresh", "adam": "fresh"}


def sdpo_step_input(wc):
    """Step 0 starts from the model (and a trained checkpoint's adapter); step s > 0 also reads
    step s-1's adapter, Adam state, rollouts, evaluations and metrics."""
    run = sdpo_run(wc)
    step = int(wc.step)
    inputs = {"tasks": tasks_file(run["suite"]), "split": split_file(run["suite"]), "model": model_dir_input(run["model"])}
    if step > 0:
        prev = sdpo_step_dir(wc.model, wc.suite, wc.variant, wc.seed, step - 1)
        inputs.update(
            adapter=f"{prev}/adapter",
            optimizer=f"{prev}/optimizer.pt",
            rollouts=f"{prev}/rollouts.parquet",
            evaluations=f"{prev}/evaluations.parquet",
            metrics=f"{prev}/metrics.json",
        )
    adapter = checkpoint_adapter(run["model"])
    if step == 0 and adapter:
        inputs["checkpoint_adapter"] = adapter[0]
    return inputs


def sdpo_table_input(wc):
    """metrics.json of steps 0..S of every configured variant and seed (each seed on its suite)."""
    sdpo = config["sdpo"]
    return [
        sdpo_step_file(wc.model, sdpo_seed_suite(config, wc.suite, seed), variant, seed, step, "metrics.json")
        for variant in sdpo["variants"]
        for seed in sdpo["seeds"]
        for step in range(sdpo["steps"] + 1)
    ]


# ---------------------------------------------------------------- input functions of the Best-of-N analyses (rules/analysis.smk)


ANALYSES = config["analyses"]


def bon_seeds(suite):
    """Seeds of a suite's Best-of-N records: BoN-L1's (`analyses.l1.seeds`) for its suite, else run.seeds."""
    l1 = ANALYSES["l1"]
    return l1["seeds"] if l1 and suite == l1["suite"] else SEEDS


def bon_sampling(suite):
    """The `sampling` settings of a suite's Best-of-N: BoN-L1's K (`analyses.l1.k`) for its suite."""
    l1 = ANALYSES["l1"]
    if l1 and suite == l1["suite"] and l1.get("k"):
        return canonical({**config["sampling"], "k": l1["k"]})
    return cfg("sampling")


def bon_records_input(wc):
    """The sample and evaluation records of every Best-of-N seed of the path's model and suite."""
    seeds = bon_seeds(wc.suite)
    return {
        "samples": [samples_file(wc.model, wc.suite, s) for s in seeds],
        "evaluations": [evaluations_file(wc.model, wc.suite, s) for s in seeds],
    }


def l1_table_file(name):
    """A BoN-L1 analysis of run.model (`analyses.l1`): table_file(model, l1 suite, name)."""
    if not ANALYSES["l1"]:
        raise WorkflowError("config key 'analyses.l1' is null; name the suite of BoN-L1 (every eval task)")
    return table_file(RUN["model"], ANALYSES["l1"]["suite"], name)


def analysis_params(*keys):
    """The `analyses` settings an analysis reads, with `selection` (its score and span)."""
    return canonical({"selection": config["selection"], **{key: ANALYSES[key] for key in keys}})


def table7_input(wc):
    """Table 7's records and `benchmark:` files: the Best-of-N samples with their sample and
    evaluate jobs, for boa_step1 steps 0 and 1 of the main TTT runs, for sdpo every step of the
    feedback variant's runs."""
    seeds = bon_seeds(wc.suite)
    shards = range(config["resources"]["evaluation"]["shards"])
    inputs = {
        "samples": [samples_file(wc.model, wc.suite, s) for s in seeds],
        "sample_benchmarks": [f"results/benchmarks/sample/{wc.model}/{wc.suite}/seed{s}.tsv" for s in seeds],
        "evaluate_benchmarks": [
            f"results/benchmarks/evaluate/{wc.model}/{wc.suite}/seed{s}/shard{i}.tsv" for s in seeds for i in shards
        ],
    }
    if "boa_step1" in ANALYSES["compute_methods"]:
        runs = experiment_runs("main")
        inputs["ttt_rollouts"] = [ttt_step_file(r, s, "rollouts.parquet") for r in runs for s in (0, 1)]
        inputs["ttt_benchmarks"] = [f"results/benchmarks/ttt_step/{r}/step{s}.tsv" for r in runs for s in (0, 1)]
    if "sdpo" in ANALYSES["compute_methods"]:
        # the paper's row is SDPO (feedback): every step of that variant's runs, seed-major
        if "feedback" not in config["sdpo"]["variants"]:
            raise WorkflowError(
                "analyses.compute_methods lists sdpo, whose Table 7 row is the feedback variant: add it to sdpo.variants"
            )
        steps = [
            (sdpo_seed_suite(config, wc.suite, seed), seed, step)
            for seed in config["sdpo"]["seeds"]
            for step in range(config["sdpo"]["steps"] + 1)
        ]
        for key, name in (("sdpo_rollouts", "rollouts.parquet"), ("sdpo_metrics", "metrics.json")):
            inputs[key] = [sdpo_step_file(wc.model, su, "feedback", seed, step, name) for su, seed, step in steps]
        inputs["sdpo_benchmarks"] = [
            f"results/benchmarks/sdpo_step/{wc.model}/{su}/feedback/seed{seed}/step{step}.tsv" for su, seed, step in steps
        ]
    return inputs


def stage_gpus(wildcards, output):
    """GPUs of the sampling, evaluation and training jobs (Table 7's GPU-hours). Taking `output`
    keeps this param out of Snakemake's change tracking, as resources are."""
    return {stage: config["resources"][stage]["gpus"] for stage in ("sampling", "evaluation", "training")}


def fig7_spec():
    """Figure 7's TTT runs (D17): the first main run against Best-of-N of its seed (Subset 1) and,
    when ttt.experiments.subset2 is set, the Subset-2 run (against Table 4's Best-of-N seed)."""
    run = experiment_runs("main")[0]
    subset2 = EXPERIMENTS["subset2"]
    return {"run": run, "seed": ttt_run(run)["seed"], "subset2_run": subset2["run"] if subset2 else None}


def fig7_input(wc):
    """Figure 7's tables: Table 6's per-task trajectory and selection with Table 8 (Subset 1), and
    Table 4's trajectory, selection and per-task Best-of-N fast_1 when a Subset-2 run is set."""
    inputs = {
        "per_task": ttt_table_file("table6_per_task.csv"),
        "selection": ttt_table_file("table6_selection.csv"),
        "table8": table_file(RUN["model"], RUN["suite"], "table8.csv"),
        "table_provenance": ttt_table_file("table6.csv.provenance.json"),
    }
    if EXPERIMENTS["subset2"]:
        for key, name in (
            ("s2_trajectory", "table4_trajectory.csv"),
            ("s2_selection", "table4_selection.csv"),
            ("s2_tasks", "table4_per_task.csv"),
        ):
            inputs[key] = ttt_table_file(name)
    return inputs


# ---------------------------------------------------------------- targets of `all` (Snakefile)
# What `snakemake all` builds: every paper output the configuration enables, one function per
# stage so that each stage's switches are read in one place. A new output joins its stage's list;
# a new stage gets a function and a line in all_targets().


def bon_targets():
    """Best-of-N on run.model/run.suite: Table 2 (scaling), Table 3 (selection) and Figure 4."""
    return [
        table_file(RUN["model"], RUN["suite"], "table2.csv"),
        table_file(RUN["model"], RUN["suite"], "table3.csv"),
        "figures/fig4.pdf",
    ]


def ttt_targets():
    """The TTT tables of ttt.experiments (§9.5): Table 6 with Figures 3 and 5 when main runs are
    listed, Tables 4, 10, 12 and the transfer table when their experiment is set, and the open
    questions' remedies and reward-sparsification comparisons with their figures when listed."""
    out = []
    if EXPERIMENTS["main"]:
        out += [ttt_table_file("table6.csv"), "figures/fig3.pdf", "figures/fig5.pdf"]
    for key, name in (("subset2", "table4"), ("lr_sweep", "table10"), ("isolated", "table12"), ("transfer", "transfer")):
        if EXPERIMENTS[key]:
            out.append(ttt_table_file(f"{name}.csv"))
    # the paper's open questions 1 and 3 (§6.6): TTT variants against the paper's run
    for key, figure in (("remedies", "ttt_remedies"), ("reward_sparsification", "reward_sparsification")):
        if EXPERIMENTS[key]:
            out += [ttt_table_file(f"{key}.csv"), f"figures/open_questions/{figure}.pdf"]
    return out


def probe_targets():
    """The NLL probe's table and Figure 6, when probe.run names a run."""
    if not PROBE["run"]:
        return []
    return [f"results/tables/probes/{PROBE['run']}/seed{PROBE['seed']}/probe.csv", "figures/fig6.pdf"]


def sdpo_targets():
    """Table 9 of run.model/run.suite when sdpo lists variants and seeds."""
    sdpo = config["sdpo"]
    return [sdpo_table_file(RUN["model"], RUN["suite"])] if sdpo["variants"] and sdpo["seeds"] else []


def analysis_targets():
    """The §5.2 / App. H analyses computed from the Best-of-N records (issue 12, item 1): Tables
    1, 7, 8 and 11, length_control.json and Figures 1 and 7 on run.model/run.suite; with
    analyses.l1 set, logprob_variance.csv and full_l1.json on that suite (BoN-L1); with
    analyses.deployable, the deployable selection of open question 2 and its figure on
    run.suite and on BoN-L1's suite."""
    names = ["table1.csv", "table7.csv", "table8.csv", "table11.csv", "length_control.json"]
    out = ["figures/fig1.pdf", "figures/fig7.pdf", *(table_file(RUN["model"], RUN["suite"], n) for n in names)]
    if ANALYSES["l1"]:
        out += [l1_table_file("logprob_variance.csv"), l1_table_file("full_l1.json")]
    if ANALYSES["deployable"]:  # open question 2 (§6.6), on run.suite and on BoN-L1's suite
        suites = [RUN["suite"], *([ANALYSES["l1"]["suite"]] if ANALYSES["l1"] else [])]
        for suite in dict.fromkeys(suites):
            out += [table_file(RUN["model"], suite, "deployable_selection.csv"), deployable_figure_file(RUN["model"], suite)]
    return out


def all_targets():
    """Every output of `snakemake all`, grouped by stage (duplicates dropped, order kept)."""
    stages = {
        "best_of_n": bon_targets(),
        "ttt": ttt_targets(),
        "probe": probe_targets(),
        "rlvr": rlvr_targets(),
        "sdpo": sdpo_targets(),
        "analyses": analysis_targets(),
    }
    return list(dict.fromkeys(path for paths in stages.values() for path in paths))
