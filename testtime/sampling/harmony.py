"""Parse gpt-oss completions (Harmony channels) and label their tokens by channel.

gpt-oss answers in Harmony messages. A completion starts right after the prompt's
``<|start|>assistant``, so its first message has no ``<|start|>`` header::

    <|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...<|return|>

The code to evaluate is in the ``final`` channel only. Running ``extract_python_code`` on the
whole decoded text would return a fence from the reasoning, or the markup itself.

What this module provides (pure functions; no torch, no tokenizer):

* :func:`parse_completion`: the messages of a decoded completion, its final-channel text and
  why there is none (``error_kind``). It never raises on malformed or truncated text.
* :func:`final_code`: the code to evaluate, taken from the final channel only.
* :func:`reference_text`: the text exactly as the paper's renderer (tinker-cookbook
  ``GptOssRenderer.parse_response`` + ``get_text_content``, reference-protocol §3.3) returns it.
  It differs from :func:`parse_completion` in two cases. For a completion with no stop token it
  returns the whole decoded string, markup included, so a fence in the reasoning can be
  extracted. It also includes ``commentary`` text. Use it only to measure that divergence.
* :func:`token_channels`: one label per completion token, one of ``header``, ``analysis``,
  ``commentary``, ``final`` or ``stop``.
* :func:`span_mask` / :func:`code_mask`: which tokens make up a scored span (``completion``,
  ``final``, ``code``). A scorer sums log-probs over the mask.

Why not the ``openai-harmony`` package (PyPI, v0.0.8). Checked offline in this project:
``load_harmony_encoding(HARMONY_GPT_OSS)`` raises ``HarmonyError: error downloading or loading
vocab file``. The Rust core needs ``o200k_base.tiktoken`` (sha256-checked). It downloads that
file from ``https://openaipublic.blob.core.windows.net/encodings/`` into
``$TIKTOKEN_RS_CACHE_DIR`` (default ``$TMP/tiktoken-rs-cache``), or reads it from
``$TIKTOKEN_ENCODINGS_BASE``. This project has neither the file nor network access. Even with
the file, its parser works on o200k token ids and is strict about malformed messages; the
reference (§3.3) parses the decoded *string* and tolerates truncation. So this is a small
string parser of the documented format (openai/harmony ``docs/format.md``) that follows the
cookbook's splitting rules:

* A message's header is the text since the previous ``<|start|>``, or since the previous
  message's end (the first message has no ``<|start|>``). It runs up to ``<|message|>``.
* The channel is the first run of characters after ``<|channel|>`` that are neither spaces
  nor ``<``. The recipient is ``to=X``, which may appear in the role part or the channel part
  of the header. The content type is ``<|constrain|>X``.
* A body ends at the first ``<|end|>``, ``<|call|>`` or ``<|return|>``, or at the end of the
  text (truncated).
* A body whose recipient starts with ``functions.`` is a tool call, never answer text.

Stop tokens. ``Completion.text`` (and the ``completion`` column) is decoded *without* the
sampled stop token, so the caller passes it: ``stop_token=tokenizer.decode([token_ids[-1]])``
when ``finish_reason == "stop"``, else ``None``. A stop string that is still in the text
(``<|return|>`` or ``<|call|>``) also counts; the text is cut at the first one, as the cookbook
does.

Completions without Harmony markup (small chat models such as SmolLM2) have no ``<|message|>``
and no ``<|channel|>``. There the whole text is the answer: ``final_text`` is the text, every
content token is labelled ``final``, and the ``final`` span equals the ``completion`` span.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

START = "<|start|>"
END = "<|end|>"
MESSAGE = "<|message|>"
CHANNEL = "<|channel|>"
CONSTRAIN = "<|constrain|>"
RETURN = "<|return|>"
CALL = "<|call|>"
#: Tokens that stop sampling (reference-protocol §3.2: ids 200002 and 200012).
HARMONY_STOPS: tuple[str, ...] = (RETURN, CALL)
#: Tokens that end a message body (cookbook ``_parse_harmony_messages``).
BODY_TERMINATORS: tuple[str, ...] = (END, CALL, RETURN)

Label = Literal["header", "analysis", "commentary", "final", "stop"]
LABELS: tuple[str, ...] = ("header", "analysis", "commentary", "final", "stop")
Span = Literal["completion", "final", "code"]

# The cookbook's header regexes (reference-protocol §3.3).
_CHANNEL_RE = re.compile(r"<\|channel\|>([^<\s]+)")
_RECIPIENT_RE = re.compile(r"to=([^\s<]+)")
_CONSTRAIN_RE = re.compile(r"<\|constrain\|>\s*([^\s<]+)")
_ROLE_RE = re.compile(r"<\|start\|>([^\s<]+)")

# The paper's extract_python_code (reference-protocol §3.4), replicated here with positions so
# the code's character range in the final text is exact; tests check it equals
# testtime.prompting.extract_python_code.
_FENCE = re.compile(r"```(?:python)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_LEADING_FENCE = re.compile(r"^```[A-Za-z]*")
_TRAILING_TICKS = re.compile(r"`+$")


@dataclass(frozen=True)
class HarmonyMessage:
    """One message of a completion.

    ``role`` is ``assistant`` for the first message, which has no ``<|start|>`` header.
    ``channel`` is ``None`` when the header names none, and for text without markup.
    ``terminator`` is the token that ended the body (``<|end|>``, ``<|return|>``, ``<|call|>``,
    or the sampled stop token of a text without markup). It is ``None`` when the text ends
    inside the body (truncated).
    """

    role: str
    channel: str | None
    content: str
    terminator: str | None
    recipient: str | None = None
    content_type: str | None = None

    @property
    def is_tool_call(self) -> bool:
        """A body addressed to a function (``to=functions.*``): arguments, not answer text."""
        return bool(self.recipient and self.recipient.startswith("functions."))

    @property
    def label(self) -> Label:
        """The token label of this message's body (see :func:`token_channels`)."""
        return _body_label(self.channel, self.recipient)


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion split into Harmony messages.

    ``final_text`` joins the bodies of all final-channel messages that are not tool calls, in
    order, with no separator (the cookbook joins its text parts this way). It is ``None`` when
    there is no such message. Without markup it is the whole text.

    ``analysis_text`` joins the analysis bodies ('' when there are none).

    ``error_kind`` says why there is nothing to evaluate. It is ``None`` when ``final_text``
    is not blank. Otherwise:

    * ``no_final_channel``: markup was found but no final message. Examples: truncated during
      the analysis, or a last message that is a tool call ending in ``<|call|>``.
    * ``empty_final``: a final message exists but its body is blank (whitespace only).

    ``harmony`` says whether the text has markup (``<|message|>`` or ``<|channel|>``).
    ``stop_token`` is the stop that ended sampling (found in the text or passed in), or
    ``None``. ``trailing_header`` is header text after the last body that never reached its
    ``<|message|>``; this happens when the text is truncated inside a header.

    ``truncated`` is True when sampling stopped without a stop token (``finish_reason ==
    "length"``). A completion truncated inside its final message keeps ``has_final=True`` and
    the partial ``final_text``; its ``error_kind`` is ``None`` when that text is not blank.
    """

    messages: list[HarmonyMessage]
    final_text: str | None
    analysis_text: str
    has_final: bool
    error_kind: str | None
    truncated: bool
    harmony: bool
    stop_token: str | None
    trailing_header: str = ""

    @property
    def ended_in_tool_call(self) -> bool:
        """Sampling stopped on ``<|call|>``: the model asked for a tool instead of answering."""
        return self.stop_token == CALL


def _body_label(channel: str | None, recipient: str | None) -> Label:
    if recipient and recipient.startswith("functions."):
        return "commentary"
    if channel == "analysis":
        return "analysis"
    if channel == "final":
        return "final"
    return "commentary"


def has_harmony_markup(text: str) -> bool:
    """True when the text contains a Harmony message or channel marker."""
    return MESSAGE in text or CHANNEL in text


def _cut_at_stop(text: str, stop_token: str | None) -> tuple[str, str | None]:
    """Cut the text at the first Harmony stop string in it, as the cookbook does.

    The stop string found in the text wins over ``stop_token``.
    """
    cut, found = len(text), None
    for tok in HARMONY_STOPS:
        i = text.find(tok)
        if i != -1 and i < cut:
            cut, found = i, tok
    if found is not None:
        return text[:cut], found
    return text, stop_token or None


def _split_messages(text: str, stop_token: str | None) -> tuple[list[HarmonyMessage], str]:
    """The cookbook's ``_parse_harmony_messages``, plus each body's terminator.

    Returns the messages and any header text after the last message that has no
    ``<|message|>`` (truncated inside a header).
    """
    messages: list[HarmonyMessage] = []
    idx = 0
    while True:
        message_idx = text.find(MESSAGE, idx)
        if message_idx == -1:
            break
        header_start = text.rfind(START, idx, message_idx)
        header = text[(idx if header_start == -1 else header_start) : message_idx]
        content_start = message_idx + len(MESSAGE)
        end_idx, terminator = len(text), None
        for tok in BODY_TERMINATORS:
            j = text.find(tok, content_start)
            if j != -1 and j < end_idx:
                end_idx, terminator = j, tok
        if terminator is None:
            # The body runs to the end of the (already stop-cut) text: it ended on the sampled
            # stop token when there was one, else it was truncated.
            terminator = stop_token
        channel = _CHANNEL_RE.search(header)
        recipient = _RECIPIENT_RE.search(header)
        constrain = _CONSTRAIN_RE.search(header)
        role = _ROLE_RE.search(header)
        messages.append(
            HarmonyMessage(
                role=role.group(1) if role else "assistant",
                channel=channel.group(1) if channel else None,
                content=text[content_start:end_idx],
                terminator=terminator,
                recipient=recipient.group(1) if recipient else None,
                content_type=constrain.group(1) if constrain else None,
            )
        )
        if end_idx >= len(text):
            return messages, ""
        idx = end_idx + len(terminator or "")
    return messages, text[idx:]


def parse_completion(text: str, stop_token: str | None = None) -> ParsedCompletion:
    """Split a decoded completion into Harmony messages. Never raises.

    ``text`` is the completion decoded with special tokens kept (``skip_special_tokens=False``),
    starting right after the prompt's ``<|start|>assistant``. ``stop_token`` is the decoded
    stop token that ended sampling, when the text does not contain it (the sample records drop
    it). Pass ``None`` when sampling hit the token limit.
    """
    body, stop = _cut_at_stop(text, stop_token)
    truncated = stop is None
    if not has_harmony_markup(body):
        msg = HarmonyMessage(role="assistant", channel=None, content=body, terminator=stop)
        return ParsedCompletion(
            messages=[msg],
            final_text=body,
            analysis_text="",
            has_final=True,
            error_kind=None if body.strip() else "empty_final",
            truncated=truncated,
            harmony=False,
            stop_token=stop,
        )
    messages, trailing = _split_messages(body, stop)
    finals = [m for m in messages if m.label == "final"]
    final_text = "".join(m.content for m in finals) if finals else None
    if final_text is None:
        error_kind: str | None = "no_final_channel"
    elif not final_text.strip():
        error_kind = "empty_final"
    else:
        error_kind = None
    return ParsedCompletion(
        messages=messages,
        final_text=final_text,
        analysis_text="".join(m.content for m in messages if m.label == "analysis"),
        has_final=bool(finals),
        error_kind=error_kind,
        truncated=truncated,
        harmony=True,
        stop_token=stop,
        trailing_header=trailing,
    )


def reference_text(text: str, stop_token: str | None = None) -> str:
    """The answer text exactly as the paper's renderer returns it (reference-protocol §3.3).

    This follows cookbook ``GptOssRenderer.parse_response`` and then ``get_text_content``:

    1. With no ``<|return|>`` or ``<|call|>`` (in the text or as ``stop_token``), return the
       whole decoded string, markup included.
    2. Otherwise cut at the first stop token and split into messages. Skip blank bodies.
       ``functions.*`` bodies are tool calls. ``analysis`` bodies are reasoning parts.
       ``final`` and ``commentary`` bodies are text parts.
    3. With no parts at all (reasoning or text), return the cut string. Otherwise join the
       text parts with no separator ('' when there are only reasoning parts).

    Unlike :attr:`ParsedCompletion.final_text`, this can contain the reasoning (case 1) and
    commentary text.
    """
    cut, stop = _cut_at_stop(text, stop_token if stop_token in HARMONY_STOPS else None)
    if stop is None:
        return text
    messages, _ = _split_messages(cut, stop)
    reasoning, parts = False, []
    for m in messages:
        if not m.content.strip() or m.is_tool_call:
            continue
        if m.channel == "analysis":
            reasoning = True
        elif m.channel in ("final", "commentary"):
            parts.append(m.content)
    if not parts and not reasoning:
        return cut
    return "".join(parts)


def locate_python_code(text: str) -> tuple[str, int, int]:
    """The paper's ``extract_python_code`` (reference-protocol §3.4), returning where the code is.

    Returns ``(code, start, end)`` with ``code == text.translate(quotes)[start:end]``. The quote
    translation maps one character to one character, so the offsets also hold in ``text``.
    """
    if not text:
        return "", 0, 0
    t = text.translate(_QUOTES)
    match = _FENCE.search(t)
    start, end = match.span(1) if match else (0, len(t))
    start, end = _strip_span(t, start, end)
    lead = _LEADING_FENCE.match(t, start, end)
    if lead:
        start = lead.end()
    trail = _TRAILING_TICKS.search(t[start:end])
    if trail:
        end = start + trail.start()
    start, end = _strip_span(t, start, end)
    return t[start:end], start, end


def _strip_span(t: str, start: int, end: int) -> tuple[int, int]:
    piece = t[start:end]
    lstripped = piece.lstrip()
    start += len(piece) - len(lstripped)
    return start, start + len(lstripped.rstrip())


def code_char_range(final_text: str, code: str) -> tuple[int, int] | None:
    """Where ``code`` sits in ``final_text``, as ``(start, end)`` character offsets.

    The offsets are exact when ``code`` came from the paper's extraction. For another
    extractor, this falls back to the first occurrence (after curly quotes are straightened).
    Returns ``None`` when the code is empty or not found.
    """
    if not code:
        return None
    found, start, end = locate_python_code(final_text)
    if found == code:
        return start, end
    i = final_text.translate(_QUOTES).find(code)
    return (i, i + len(code)) if i != -1 else None


def final_code(
    text: str,
    extract: Callable[[str], str] | None = None,
    stop_token: str | None = None,
) -> tuple[str, str | None]:
    """The code to evaluate: ``extract`` applied to the final channel only.

    Returns ``(code, error_kind)``. ``error_kind`` is the parse's (``no_final_channel`` or
    ``empty_final``), and ``code`` is then ``''``. A fence inside the analysis channel is never
    returned. ``extract`` defaults to the paper's ``testtime.prompting.extract_python_code``.
    Without markup, the whole text is the final channel, which is today's behaviour.
    """
    if extract is None:
        from testtime.prompting import extract_python_code

        extract = extract_python_code
    parsed = parse_completion(text, stop_token)
    if parsed.error_kind is not None or parsed.final_text is None:
        return "", parsed.error_kind or "no_final_channel"
    return extract(parsed.final_text), None


def decode_tokens(token_ids: Sequence[int], decode_fn: Callable[[list[int]], str]) -> list[str]:
    """Decode each token on its own, e.g. ``decode_fn=lambda ids: tok.decode(ids,
    skip_special_tokens=False)``.

    This gives the strings :func:`token_channels` expects: special tokens come out whole
    (``<|channel|>``), and spaces come out as text, not as the ``Ġ`` of raw BPE pieces. Pass
    ``clean_up_tokenization_spaces=False`` if the tokenizer has that option, so that no token
    loses a space. A character split across tokens decodes as U+FFFD; labels are unaffected,
    and the ``code`` span is located in the joined token strings, not in the decoded text.
    """
    return [decode_fn([int(i)]) for i in token_ids]


def token_channels(token_texts: Sequence[str], stopped: bool | None = None) -> list[Label]:
    """One label per completion token: ``header``, ``analysis``, ``commentary``, ``final``
    or ``stop``.

    ``token_texts`` holds the completion's tokens, each decoded on its own
    (:func:`decode_tokens`), with the sampled stop token last when there is one. ``stopped``
    says whether the last token is that stop token (``finish_reason == "stop"``). With
    ``None``, the last token counts as a stop only if it is ``<|return|>`` or ``<|call|>``.

    * ``header``: markup and header text, meaning everything from a message's start up to and
      including its ``<|message|>``, plus each ``<|end|>``. This covers the channel name, the
      recipient and the ``<|constrain|>`` type.
    * ``analysis`` / ``final``: body tokens of that channel.
    * ``commentary``: body tokens of any other channel, of a header with no channel, and of
      tool calls (``to=functions.*``), even one written on the final channel. These tokens
      are not answer text.
    * ``stop``: the sampled stop token: the first ``<|return|>`` or ``<|call|>``, else the
      last token when ``stopped``. Tokens after it (a sampler never produces them) are
      ``header``.

    The segmentation is the same as :func:`parse_completion` applied to ``"".join(token_texts)``.
    The ``final`` tokens joined together give its ``final_text``. Without markup (no
    ``<|message|>`` and no ``<|channel|>`` token), every token is ``final`` except the stop.
    """
    n = len(token_texts)
    last_is_stop = (n > 0 and token_texts[-1] in HARMONY_STOPS) if stopped is None else (stopped and n > 0)
    # Sampling ends at the first stop; anything after it (never produced by a sampler that
    # stops there) is labelled ``header`` so that no span counts it.
    cut = next((i for i, t in enumerate(token_texts) if t in HARMONY_STOPS), n - 1 if last_is_stop else n)
    labels: list[Label] = ["header"] * n
    if cut < n:
        labels[cut] = "stop"
    if not any(t == MESSAGE or t == CHANNEL for t in token_texts[:cut]):
        labels[:cut] = ["final"] * cut
        return labels
    in_body = False
    header = ""
    body_label: Label = "commentary"
    for i, t in enumerate(token_texts[:cut]):
        if in_body:
            if t == END:
                in_body, header = False, ""  # <|end|> is markup: stays "header"
            else:
                labels[i] = body_label
        elif t == MESSAGE:
            channel = _CHANNEL_RE.search(header)
            recipient = _RECIPIENT_RE.search(header)
            body_label = _body_label(channel.group(1) if channel else None, recipient.group(1) if recipient else None)
            in_body, header = True, ""
        elif t == START:
            header = t
        else:
            header += t
    return labels


def _final_stop_included(labels: Sequence[str], j: int) -> bool:
    """Whether the stop token at ``j`` ends a final-channel body.

    True when the nearest earlier token that is not a stop is labelled ``final``, or when there
    is none (a completion that is only a stop token). An empty final body followed by the stop
    has no ``final`` token before it, so its stop is not included.
    """
    for k in range(j - 1, -1, -1):
        if labels[k] != "stop":
            return labels[k] == "final"
    return True


def span_mask(
    labels: Sequence[str],
    span: Span,
    code_char_range: tuple[int, int] | None = None,
    token_texts: Sequence[str] | None = None,
    include_stop: bool = True,
) -> list[bool]:
    """Which completion tokens a scored span covers. Sum the log-probs where the mask is True.

    * ``completion``: every sampled token, stop token included. This is the current
      ``lp_sum`` (reference-protocol §5.3, Alternative B).
    * ``final``: the final-channel body tokens, plus the stop token that ends the final body
      when ``include_stop`` is set. This is §5.3 Alternative A, and the default for
      sampling-time scores. Without markup it equals ``completion`` (with ``include_stop``).
    * ``code``: the final-channel tokens whose characters overlap ``code_char_range``. The
      range is given as offsets in the joined text of the ``final`` tokens (which is
      ``ParsedCompletion.final_text``; see :func:`code_char_range`), so ``token_texts`` is
      required. The stop token is never part of ``code``. Without a range, the mask is all
      False.

    Why ``final`` includes the stop token by default. The stop token (``<|return|>``) is the
    model's decision that the answer is complete. The sampler's ``completion`` span already
    includes it, and training uses it as the last target (§3.2). Including it keeps
    ``final == completion`` for models without channels. §5.3's *primary* span does not score
    ``<|return|>``, but that span is a teacher-forced re-score of ``raw_action`` alone: the
    ``code`` span here, which excludes it. To get a final span without the stop token, pass
    ``include_stop=False``. Record which choice was made.
    """
    n = len(labels)
    if span == "completion":
        return [True] * n
    if span == "final":
        return [
            lab == "final" or (lab == "stop" and include_stop and _final_stop_included(labels, j)) for j, lab in enumerate(labels)
        ]
    if span == "code":
        if code_char_range is None:
            return [False] * n
        if token_texts is None or len(token_texts) != n:
            raise ValueError("span 'code' needs token_texts, one per label")
        start, end = code_char_range
        mask, pos = [False] * n, 0
        for j, (lab, t) in enumerate(zip(labels, token_texts)):
            if lab != "final":
                continue
            a, b = pos, pos + len(t)
            pos = b
            mask[j] = a < end and b > start and a < b
        return mask
    raise ValueError(f"unknown span {span!r}; choose 'completion', 'final' or 'code'")


def code_mask(
    token_texts: Sequence[str],
    labels: Sequence[str],
    extract: Callable[[str], str] | None = None,
) -> tuple[list[bool], str]:
    """The ``code`` span of a completion, and the code it covers.

    The code is extracted from the joined text of the ``final`` tokens, which is the final
    text as the tokens spell it. Its range is then located in that text.
    """
    final = "".join(t for t, lab in zip(token_texts, labels) if lab == "final")
    if extract is None:
        code, start, end = locate_python_code(final)
        rng = (start, end) if code else None
    else:
        code = extract(final)
        rng = code_char_range(final, code)
    return span_mask(labels, "code", rng, token_texts), code


def span_logprob(token_logprobs: Sequence[float], mask: Sequence[bool]) -> tuple[float, int]:
    """``(lp_sum, n_tokens)`` of the log-probs under a mask (the mean is ``lp_sum / n``)."""
    if len(token_logprobs) != len(mask):
        raise ValueError(f"{len(token_logprobs)} log-probs for a mask of {len(mask)} tokens")
    picked = [float(lp) for lp, m in zip(token_logprobs, mask) if m]
    return float(sum(picked)), len(picked)


#: The scored spans a sample record carries log-prob sums for (``selection.span``, ``probe.span``).
SPANS: tuple[str, ...] = ("completion", "final", "code")


def span_column(score: str, span: str) -> str:
    """The sample-record column of a score (``lp_mean`` or ``lp_sum``) on a span: the bare name
    for ``completion`` (the original columns), ``<score>_<span>`` otherwise."""
    if span not in SPANS:
        raise ValueError(f"span {span!r}: choose one of {SPANS}")
    return score if span == "completion" else f"{score}_{span}"


def sample_fields(
    text: str,
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    finish_reason: str,
    decode_fn: Callable[[list[int]], str],
    extract: Callable[[str], str] | None = None,
) -> dict[str, object]:
    """What a sample record adds from parsing its completion: the final-channel text, the code
    to evaluate (``raw_action``, from the final channel only), why there is none
    (``parse_error_kind``), one channel label per token, the ``code`` token mask, and
    ``lp_sum``/``lp_mean``/``n_tokens`` on the ``final`` and ``code`` spans (the ``completion``
    span is the record's plain ``lp_sum``/``lp_mean``/``n_tokens``)."""
    stopped = finish_reason == "stop"
    stop_token = decode_fn([int(token_ids[-1])]) if stopped and len(token_ids) else None
    parsed = parse_completion(text, stop_token)
    code, error = final_code(text, extract, stop_token)
    texts = decode_tokens(token_ids, decode_fn)
    labels = token_channels(texts, stopped=stopped)
    code_tokens, _ = code_mask(texts, labels, extract) if error is None else ([False] * len(labels), "")
    fields: dict[str, object] = {
        "final_text": parsed.final_text,
        "raw_action": code,
        "parse_error_kind": error,
        "token_channels": list(labels),
        "code_mask": code_tokens,
    }
    for span, mask in (("final", span_mask(labels, "final")), ("code", code_tokens)):
        total, n = span_logprob(token_logprobs, mask)
        fields[f"lp_sum_{span}"] = total
        fields[f"lp_mean_{span}"] = total / n if n else float("nan")
        fields[f"n_tokens_{span}"] = n
    return fields


def record_span_mask(record: Mapping[str, object], span: str) -> list[bool]:
    """A sample record's token mask for ``span``, from its ``token_channels`` and ``code_mask``."""
    if span == "code":
        return [bool(m) for m in record["code_mask"]]  # type: ignore[union-attr]
    return span_mask(list(record["token_channels"]), span)  # type: ignore[arg-type]
