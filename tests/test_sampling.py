"""The transformers backend with the real embedded model: reproducible, raw log-probs recorded."""

from __future__ import annotations

import math

import pytest
import torch

from testtime.prompting import build_messages
from testtime.sampling import SamplingParams, make_backend, row_seed
from testtime.sampling.loop import sample_tasks
from testtime.tasks.prepare import prepare_tasks


@pytest.fixture(scope="module")
def backend(model_dir):
    torch.set_num_threads(2)
    return make_backend("transformers", str(model_dir))


@pytest.fixture(scope="module")
def prompt(backend):
    from testtime.tasks import load_bundled

    relu = load_bundled()[0]
    return backend.render(build_messages("compact", relu.problem_id, relu.name, relu.code))


def test_samples_do_not_depend_on_batch_layout(backend, prompt):
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    four = backend.sample(prompt, 4, 1000, params)
    alone = backend.sample(prompt, 1, 1003, params)[0]
    assert alone.token_ids == four[3].token_ids
    assert four[3].row_seed == alone.row_seed == 1003
    assert len({tuple(c.token_ids) for c in four}) > 1  # different seeds, different samples at T=1


def test_recorded_logprobs_are_raw_temperature_one(backend, prompt):
    params = SamplingParams(temperature=0.25, max_new_tokens=20)
    samples = backend.sample(prompt, 3, 7, params)
    rescored = backend.score(prompt, [s.token_ids for s in samples])
    for s, r in zip(samples, rescored):
        assert len(s.token_logprobs) == len(s.token_ids) == len(r)
        assert max(abs(a - b) for a, b in zip(s.token_logprobs, r)) < 1e-3
        assert all(lp <= 0 for lp in s.token_logprobs)
        assert s.finish_reason in {"stop", "length"}
        if s.finish_reason == "stop":
            assert s.token_ids[-1] in backend.stop_ids  # the stop token is scored too
        else:
            assert len(s.token_ids) == params.max_new_tokens
        assert math.isclose(s.lp_mean, s.lp_sum / len(s.token_ids))


def test_truncation_reports_length(backend, prompt):
    s = backend.sample(prompt, 1, 3, SamplingParams(temperature=1.0, max_new_tokens=2))[0]
    assert s.finish_reason in {"length", "stop"} and len(s.token_ids) <= 2


def test_invalid_settings_are_rejected(backend, prompt):
    with pytest.raises(ValueError, match="temperature"):
        backend.sample(prompt, 1, 0, SamplingParams(temperature=0.0, max_new_tokens=4))
    with pytest.raises(ValueError, match="backend"):
        make_backend("nope", "x")


def test_sample_records_carry_surprisal(backend):
    spec = {"source": "bundled", "split_seed": 42, "train_fraction": 0.8, "subset_offset": 0, "subset_size": 1}
    tasks, info = prepare_tasks(spec)
    df = sample_tasks(
        backend, tasks, {"k": 2, "temperature": 0.25, "max_new_tokens": 12, "prompt_variant": "compact"}, 42, "bundled"
    )
    assert list(df["problem_id"].unique()) == info["subset"]
    assert (df["surprisal"] == -df["lp_sum"]).all()
    assert (df["row_seed"] == [row_seed(42, "bundled", info["subset"][0], i) for i in range(2)]).all()
    assert df["raw_action"].map(type).eq(str).all()


def test_sample_records_carry_every_scored_span(backend):
    """A model without Harmony channels: the final span is the completion, raw_action is what
    the paper's extraction gives on the whole text, and the code span is within it."""
    import numpy as np

    from testtime.prompting import extract_python_code

    spec = {"source": "bundled", "split_seed": 42, "train_fraction": 0.8, "subset_offset": 0, "subset_size": 2}
    tasks, _ = prepare_tasks(spec)
    df = sample_tasks(
        backend, tasks, {"k": 3, "temperature": 1.0, "max_new_tokens": 24, "prompt_variant": "compact"}, 7, "bundled"
    )
    assert df["parse_error_kind"].isna().all() and (df["final_text"] == df["completion"]).all()
    assert (df["raw_action"] == df["completion"].map(extract_python_code)).all()
    assert np.allclose(df["lp_sum_final"], df["lp_sum"]) and (df["n_tokens_final"] == df["n_tokens"]).all()
    for r in df.itertuples():
        assert len(r.token_channels) == len(r.code_mask) == r.n_tokens
        assert set(r.token_channels) <= {"final", "stop"}
        assert r.n_tokens_code == sum(r.code_mask) <= r.n_tokens
        assert (r.n_tokens_code > 0) == bool(r.raw_action.strip())
        picked = [lp for lp, m in zip(r.token_logprobs, r.code_mask) if m]
        assert math.isclose(r.lp_sum_code, sum(picked), abs_tol=1e-9)
        if r.finish_reason == "stop":
            assert r.token_channels[-1] == "stop" and not r.code_mask[-1]  # the stop token is not code
