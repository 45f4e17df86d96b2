# Test-time training: one job per step, results/ttt/{run}/step{step}/. Step s+1 reads step s's
# files, so a run killed during step s resumes at step s and no finished step reruns.

from testtime.ttt import resolve_run, step_settings


wildcard_constraints:
    run=r"[A-Za-z0-9_.\-]+",
    step=r"\d+",
    name=r"[A-Za-z0-9_.\-]+",


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


def model_dir_input(model):
    return [f"results/models/{model}"] if config["models"][model]["materialize"] else []


def model_dir_path(model):
    spec = config["models"][model]
    return f"results/models/{model}" if spec["materialize"] else spec["source"]


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


rule ttt_step:
    input:
        unpack(ttt_step_input),
    output:
        adapter=directory("results/ttt/{run}/step{step}/adapter"),
        optimizer="results/ttt/{run}/step{step}/optimizer.pt",
        rollouts="results/ttt/{run}/step{step}/rollouts.parquet",
        evaluations="results/ttt/{run}/step{step}/evaluations.parquet",
        metrics="results/ttt/{run}/step{step}/metrics.json",
    log:
        "results/logs/ttt_step/{run}/step{step}.log",
    benchmark:
        "results/benchmarks/ttt_step/{run}/step{step}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: config["ttt"]["threads"]
    resources:
        mem_mb=6000,
    params:
        run=lambda wc: step_settings(ttt_run(wc.run), int(wc.step)),
        sampling=ttt_sampling(),
        evaluation=cfg("evaluation"),
        model=lambda wc: cfg("models", ttt_run(wc.run)["model"]),
        model_path=lambda wc: model_dir_path(ttt_run(wc.run)["model"]),
        code=code(
            "testtime/ttt.py", "testtime/scoring.py", "testtime/isolated_eval.py", "testtime/sampling",
            "testtime/prompting.py", "testtime/stages.py", "testtime/evaluation",
        ),
    script:
        "../workflow_scripts/ttt_step.py"


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


rule ttt_transfer:
    """An adapted checkpoint of one run sampled and evaluated on another run's tasks (§9.5)."""
    input:
        unpack(transfer_input),
    output:
        rollouts="results/ttt/transfer/{name}/rollouts.parquet",
        evaluations="results/ttt/transfer/{name}/evaluations.parquet",
        metrics="results/ttt/transfer/{name}/metrics.json",
    log:
        "results/logs/ttt_transfer/{name}.log",
    benchmark:
        "results/benchmarks/ttt_transfer/{name}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: config["ttt"]["threads"]
    resources:
        mem_mb=6000,
    params:
        spec=lambda wc: canonical(transfer_spec(wc.name)),
        target=lambda wc: step_settings(ttt_run(transfer_spec(wc.name)["target"]), 0),
        sampling=ttt_sampling(),
        evaluation=cfg("evaluation"),
        model=lambda wc: cfg("models", ttt_run(transfer_spec(wc.name)["target"])["model"]),
        model_path=lambda wc: model_dir_path(ttt_run(transfer_spec(wc.name)["target"])["model"]),
        code=code(
            "testtime/ttt.py", "testtime/scoring.py", "testtime/isolated_eval.py", "testtime/sampling",
            "testtime/prompting.py", "testtime/stages.py", "testtime/evaluation",
        ),
    script:
        "../workflow_scripts/ttt_transfer.py"
