"""Harmony parsing of gpt-oss completions, per-token channel labels and scored-span masks.

The transcripts are written from the Harmony format documentation (openai/harmony
``docs/format.md``) and the prompt of reference-protocol §3.2: a completion starts right after
``<|start|>assistant``. Tokens are strings, one special token per token, as from decoding each
id on its own; no tokenizer is needed.
"""

from __future__ import annotations

import random
import re

import pytest

from testtime.prompting import extract_python_code
from testtime.sampling.harmony import (
    LABELS,
    HarmonyMessage,
    code_char_range,
    code_mask,
    decode_tokens,
    final_code,
    locate_python_code,
    parse_completion,
    reference_text,
    span_logprob,
    span_mask,
    token_channels,
)

REASONING_FENCE = "```python\nreturn x + 1\n```"
FINAL_BODY = "return torch.relu(x)"

# A final answer with a fence, after reasoning.
FINAL_WITH_CODE = (
    "<|channel|>analysis<|message|>We need ModelNew.forward equivalent to Model.forward, which "
    "applies torch.relu. A single functional call is already optimal.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>```python\n" + FINAL_BODY + "\n```"
)
# The reasoning drafts one fence; the final answer has a different one.
FENCE_IN_REASONING = (
    "<|channel|>analysis<|message|>First idea:\n" + REASONING_FENCE + "\nNo, that adds one. "
    "Use relu.<|end|><|start|>assistant<|channel|>final<|message|>```python\n" + FINAL_BODY + "\n```"
)
# Cut by max_tokens during the analysis: no final channel at all.
TRUNCATED_IN_ANALYSIS = (
    "<|channel|>analysis<|message|>Let me think about the kernel. Candidate:\n"
    + REASONING_FENCE
    + "\nBut maybe a fused version with torch.addmm would be faster because"
)
# Ends in a tool call (the model ignored "Do not call tools"): stops on <|call|>.
TOOL_CALL = (
    "<|channel|>analysis<|message|>Let me test the candidate first.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.run_python <|constrain|>json"
    '<|message|>{"code": "print(1)"}'
)
# The same call with the recipient in the role part and <|constrain|> right after the channel.
TOOL_CALL_ROLE_RECIPIENT = (
    "<|channel|>analysis<|message|>Run it.<|end|>"
    '<|start|>assistant to=functions.run_python<|channel|>commentary<|constrain|>json<|message|>{"code": "1"}'
)
# Cut by max_tokens inside the final message, after its fence closed.
TRUNCATED_IN_FINAL = (
    "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final<|message|>"
    "```python\n" + FINAL_BODY + "\n```\nThis uses the"
)
# SmolLM2-like: no Harmony markup at all.
PLAIN = "Here is the body:\n```python\n" + FINAL_BODY + "\n```\n"


def tokenize(text: str) -> list[str]:
    """Split text into token strings: special tokens whole, then words, spaces and single chars."""
    tokens = re.findall(r"<\|[a-z_]+\|>|[A-Za-z0-9_]+|\s+|.", text, flags=re.DOTALL)
    assert "".join(tokens) == text
    return tokens


def sampled(text: str, stop: str | None) -> list[str]:
    """The completion's token strings as sampled: the stop token last when sampling stopped."""
    return tokenize(text) + ([stop] if stop else [])


# --------------------------------------------------------------------------- parse_completion


def test_final_with_code():
    p = parse_completion(FINAL_WITH_CODE, stop_token="<|return|>")
    assert p.harmony and p.has_final and not p.truncated and p.error_kind is None
    assert [(m.role, m.channel, m.terminator) for m in p.messages] == [
        ("assistant", "analysis", "<|end|>"),
        ("assistant", "final", "<|return|>"),
    ]
    assert p.final_text == "```python\n" + FINAL_BODY + "\n```"
    assert p.analysis_text.startswith("We need ModelNew.forward")
    assert final_code(FINAL_WITH_CODE, stop_token="<|return|>") == (FINAL_BODY, None)


def test_stop_string_left_in_text_counts_as_the_stop():
    p = parse_completion(FINAL_WITH_CODE + "<|return|>")
    assert p.stop_token == "<|return|>" and not p.truncated
    assert p.final_text == parse_completion(FINAL_WITH_CODE, "<|return|>").final_text


def test_fence_in_reasoning_is_never_returned():
    assert extract_python_code(FENCE_IN_REASONING) == "return x + 1"  # today's whole-text extraction
    p = parse_completion(FENCE_IN_REASONING, "<|return|>")
    assert REASONING_FENCE in p.analysis_text and REASONING_FENCE not in p.final_text
    assert final_code(FENCE_IN_REASONING, stop_token="<|return|>") == (FINAL_BODY, None)
    # The cookbook drops analysis bodies too when sampling stopped.
    assert extract_python_code(reference_text(FENCE_IN_REASONING, "<|return|>")) == FINAL_BODY


def test_final_without_fence_does_not_fall_back_to_reasoning():
    text = (
        "<|channel|>analysis<|message|>" + REASONING_FENCE + "<|end|><|start|>assistant<|channel|>final<|message|>" + FINAL_BODY
    )
    assert final_code(text, stop_token="<|return|>") == (FINAL_BODY, None)


def test_truncated_in_analysis_is_an_error_record():
    p = parse_completion(TRUNCATED_IN_ANALYSIS, stop_token=None)
    assert p.truncated and not p.has_final and p.final_text is None
    assert p.error_kind == "no_final_channel"
    assert p.messages == [
        HarmonyMessage("assistant", "analysis", p.analysis_text, None),
    ]
    assert final_code(TRUNCATED_IN_ANALYSIS) == ("", "no_final_channel")
    # The paper's renderer returns the whole string here, so its extraction picks the
    # reasoning's fence: the one divergence from final_code on this transcript.
    assert reference_text(TRUNCATED_IN_ANALYSIS) == TRUNCATED_IN_ANALYSIS
    assert extract_python_code(reference_text(TRUNCATED_IN_ANALYSIS)) == "return x + 1"


@pytest.mark.parametrize("text", [TOOL_CALL, TOOL_CALL_ROLE_RECIPIENT])
def test_tool_call_ends_without_final(text):
    p = parse_completion(text, stop_token="<|call|>")
    assert p.error_kind == "no_final_channel" and not p.truncated and p.ended_in_tool_call
    call = p.messages[-1]
    assert call.is_tool_call and call.channel == "commentary" and call.terminator == "<|call|>"
    assert call.recipient == "functions.run_python" and call.content_type == "json"
    assert call.role == "assistant" and call.content.startswith('{"code"')
    assert final_code(text + "<|call|>") == ("", "no_final_channel")
    assert reference_text(text, "<|call|>") == ""  # only a reasoning part: no text


def test_truncated_in_final_keeps_the_partial_answer():
    p = parse_completion(TRUNCATED_IN_FINAL, stop_token=None)
    assert p.truncated and p.has_final and p.error_kind is None
    assert p.messages[-1].terminator is None
    assert final_code(TRUNCATED_IN_FINAL) == (FINAL_BODY, None)
    # An unclosed fence: the paper's extraction strips the opening and keeps the rest.
    unclosed = TRUNCATED_IN_FINAL.split("\n```\n")[0]
    assert final_code(unclosed) == (FINAL_BODY, None)


def test_plain_text_without_markup_is_all_final():
    p = parse_completion(PLAIN, stop_token="<|im_end|>")
    assert not p.harmony and p.has_final and p.error_kind is None and not p.truncated
    assert p.final_text == PLAIN and p.analysis_text == ""
    assert p.messages == [HarmonyMessage("assistant", None, PLAIN, "<|im_end|>")]
    assert final_code(PLAIN, stop_token="<|im_end|>") == (FINAL_BODY, None) == (extract_python_code(PLAIN), None)
    assert parse_completion(PLAIN).truncated  # no stop given: hit the token limit


def test_truncated_inside_a_header():
    text = "<|channel|>analysis<|message|>ok<|end|><|start|>assistant<|channel|>fi"
    p = parse_completion(text)
    assert p.error_kind == "no_final_channel" and p.truncated
    assert p.trailing_header == "<|start|>assistant<|channel|>fi"
    assert parse_completion("<|channel|>anal").error_kind == "no_final_channel"


def test_empty_final_and_commentary_preamble():
    empty = "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>  "
    assert parse_completion(empty, "<|return|>").error_kind == "empty_final"
    assert final_code(empty, stop_token="<|return|>") == ("", "empty_final")
    preamble = "<|channel|>commentary<|message|>Plan: fuse.<|end|><|start|>assistant<|channel|>final<|message|>" + FINAL_BODY
    p = parse_completion(preamble, "<|return|>")
    assert p.final_text == FINAL_BODY
    assert reference_text(preamble, "<|return|>") == "Plan: fuse." + FINAL_BODY  # cookbook joins both


def test_several_final_messages_are_joined_in_order():
    text = (
        "<|channel|>final<|message|>return <|end|><|start|>assistant<|channel|>analysis<|message|>hm"
        "<|end|><|start|>assistant<|channel|>final<|message|>x"
    )
    p = parse_completion(text, "<|return|>")
    assert p.final_text == "return x" and p.analysis_text == "hm"


def test_reference_text_without_parts_is_the_cut_string():
    only_call = '<|channel|>commentary to=functions.f<|message|>{"a": 1}'
    assert reference_text(only_call + "<|call|>junk") == only_call


def test_never_raises_on_random_markup():
    rng = random.Random(0)
    vocab = [
        "<|channel|>",
        "<|message|>",
        "<|end|>",
        "<|start|>",
        "<|constrain|>",
        "<|return|>",
        "<|call|>",
        "assistant",
        "analysis",
        "final",
        "commentary",
        " to=functions.f",
        "json",
        "```python\n",
        "```",
        "return x",
        " ",
        "\n",
    ]
    for _ in range(400):
        toks = [rng.choice(vocab) for _ in range(rng.randint(0, 25))]
        for stop in (None, "<|return|>", "<|call|>"):
            text = "".join(toks)
            p = parse_completion(text, stop)
            final_code(text, stop_token=stop)
            reference_text(text, stop)
            labels = token_channels(toks + ([stop] if stop else []), stopped=stop is not None)
            final_tokens = "".join(t for t, lab in zip(toks, labels) if lab == "final")
            assert final_tokens == (p.final_text or "")
            analysis_tokens = "".join(t for t, lab in zip(toks, labels) if lab == "analysis")
            assert analysis_tokens == p.analysis_text


# --------------------------------------------------------------------------- token labels


def test_token_labels_of_final_with_code():
    toks = sampled(FINAL_WITH_CODE, "<|return|>")
    labels = token_channels(toks, stopped=True)
    assert set(labels) <= set(LABELS) and len(labels) == len(toks)
    assert labels[:3] == ["header", "header", "header"]  # <|channel|> analysis <|message|>
    assert labels[-1] == "stop"
    by_label = {lab: "".join(t for t, x in zip(toks, labels) if x == lab) for lab in LABELS}
    p = parse_completion(FINAL_WITH_CODE, "<|return|>")
    assert by_label["final"] == p.final_text
    assert by_label["analysis"] == p.analysis_text
    assert by_label["header"] == "<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>final<|message|>"
    assert by_label["stop"] == "<|return|>"


def test_token_labels_of_tool_call():
    toks = sampled(TOOL_CALL, "<|call|>")
    labels = token_channels(toks)  # inferred: the last token is <|call|>
    body = "".join(t for t, x in zip(toks, labels) if x == "commentary")
    assert body == '{"code": "print(1)"}'
    assert labels[-1] == "stop" and "final" not in labels
    assert "".join(t for t, x in zip(toks, labels) if x == "header").endswith(
        "commentary to=functions.run_python <|constrain|>json<|message|>"
    )


def test_token_labels_truncated_and_plain():
    toks = tokenize(TRUNCATED_IN_ANALYSIS)
    labels = token_channels(toks, stopped=False)
    assert "stop" not in labels and "final" not in labels and labels[-1] == "analysis"
    plain = sampled(PLAIN, "<|im_end|>")
    assert token_channels(plain, stopped=True) == ["final"] * (len(plain) - 1) + ["stop"]
    # Without being told, an unknown last token is content, not a stop.
    assert token_channels(plain) == ["final"] * len(plain)


def test_decode_tokens_uses_one_id_at_a_time():
    vocab = {1: "<|channel|>", 2: "final", 3: "<|message|>", 4: "hi"}
    assert decode_tokens([1, 2, 3, 4], lambda ids: "".join(vocab[i] for i in ids)) == [
        "<|channel|>",
        "final",
        "<|message|>",
        "hi",
    ]


# --------------------------------------------------------------------------- span masks


def test_final_span_equals_completion_without_channels():
    toks = sampled(PLAIN, "<|im_end|>")
    labels = token_channels(toks, stopped=True)
    assert span_mask(labels, "final") == span_mask(labels, "completion") == [True] * len(toks)
    assert span_mask(labels, "final", include_stop=False) == [True] * (len(toks) - 1) + [False]


def test_final_span_is_final_body_plus_return():
    toks = sampled(FINAL_WITH_CODE, "<|return|>")
    labels = token_channels(toks, stopped=True)
    mask = span_mask(labels, "final")
    assert "".join(t for t, m in zip(toks, mask) if m) == "```python\n" + FINAL_BODY + "\n```<|return|>"
    no_stop = span_mask(labels, "final", include_stop=False)
    assert "".join(t for t, m in zip(toks, no_stop) if m) == "```python\n" + FINAL_BODY + "\n```"
    assert sum(span_mask(labels, "completion")) == len(toks)


def test_final_span_of_a_tool_call_or_truncation_is_empty():
    call = token_channels(sampled(TOOL_CALL, "<|call|>"), stopped=True)
    assert not any(span_mask(call, "final"))  # the <|call|> ends a commentary body
    cut = token_channels(tokenize(TRUNCATED_IN_ANALYSIS), stopped=False)
    assert not any(span_mask(cut, "final"))


@pytest.mark.parametrize("text", [FINAL_WITH_CODE, FENCE_IN_REASONING, PLAIN, TRUNCATED_IN_FINAL])
def test_code_span_covers_exactly_the_code(text):
    toks = sampled(text, "<|return|>" if "<|" in text else "<|im_end|>")
    labels = token_channels(toks, stopped=True)
    mask, code = code_mask(toks, labels)
    assert code == FINAL_BODY
    assert "".join(t for t, m in zip(toks, mask) if m) == FINAL_BODY  # these tokenize on boundaries
    assert not mask[-1]  # never the stop token
    # The same through the lower-level API with the parse's final text.
    final = parse_completion("".join(toks[:-1]), toks[-1]).final_text
    rng = code_char_range(final, extract_python_code(final))
    assert span_mask(labels, "code", rng, toks) == mask
    # A custom extractor is located by search.
    assert code_mask(toks, labels, extract=lambda s: "torch.relu")[0] == [
        t in ("torch", ".", "relu") and m for t, m in zip(toks, mask)
    ]


def test_code_span_marks_tokens_that_partly_overlap():
    toks = ["<|channel|>", "final", "<|message|>", "```python\nret", "urn x\n```", "<|return|>"]
    labels = token_channels(toks)
    mask, code = code_mask(toks, labels)
    assert code == "return x" and mask == [False, False, False, True, True, False]
    assert span_mask(labels, "code") == [False] * 6  # no range: nothing
    with pytest.raises(ValueError):
        span_mask(labels, "code", (0, 1))  # a range needs token_texts
    with pytest.raises(ValueError):
        span_mask(labels, "tokens")  # type: ignore[arg-type]


def test_code_span_of_an_error_record_is_empty():
    toks = sampled(TOOL_CALL, "<|call|>")
    mask, code = code_mask(toks, token_channels(toks))
    assert code == "" and not any(mask)


def test_span_logprob():
    toks = sampled(FINAL_WITH_CODE, "<|return|>")
    labels = token_channels(toks, stopped=True)
    lps = [-0.1 * (i + 1) for i in range(len(toks))]
    total, n = span_logprob(lps, span_mask(labels, "completion"))
    assert n == len(toks) and total == pytest.approx(sum(lps))
    total, n = span_logprob(lps, span_mask(labels, "final"))
    assert n == sum(lab in ("final", "stop") for lab in labels)
    with pytest.raises(ValueError):
        span_logprob(lps[:-1], span_mask(labels, "final"))


# --------------------------------------------------------------------------- extraction replica


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "plain",
        "```python\nreturn a\n```",
        "```PYTHON\n  return a  \n``` tail",
        "pre ```py\nreturn a\n```",
        "```\nx = 1\n```",
        "``` python\nreturn a\n```",
        "```python\nx``",
        "\u201cq\u201d ```python\nreturn \u2018a\u2019\n```",
        "```python\nreturn a",
        "``x`` ```python\n```",
        "a\n```python\nfirst\n```\n```python\nsecond\n```",
    ],
)
def test_locate_python_code_matches_the_paper_extraction(text):
    code, start, end = locate_python_code(text)
    assert code == extract_python_code(text)
    if code:
        assert text[start:end].translate(str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")) == code
