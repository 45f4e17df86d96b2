"""The byte protocol between the trusted parent and its worker processes.

``multiprocessing.Connection.recv`` unpickles, and unpickling bytes written by a process that
ran model-generated code would run that code in the parent. Every message is therefore a JSON
header plus an optional raw tensor payload, parsed strictly by the parent.

On the socket, a message is a frame: an 8-byte big-endian length, then the message. The parent
reads a frame under one overall deadline (``recv(fd, deadline)``): a worker that writes part of a
frame and stalls, or dribbles it a byte at a time, runs into the deadline like one that never
answers. (Per-read socket timeouts would not do: every byte that arrives restarts them.)
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

import numpy as np

_HEADER = struct.Struct("!I")
_FRAME = struct.Struct("!Q")
MAX_MESSAGE_BYTES = 1 << 31
# Largest single read: big outputs arrive in pieces, and a frame that announces 2 GiB costs the
# parent memory only as fast as bytes actually arrive.
_READ_CHUNK = 1 << 20


def send(fd: int, header: dict[str, Any], payload: bytes = b"", deadline: float | None = None) -> None:
    """Write one framed message; ``deadline`` (time.monotonic) bounds the whole write."""
    message = pack(header, payload)
    data = memoryview(_FRAME.pack(len(message)) + message)
    while data:
        _wait(fd, select.POLLOUT, deadline)
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            continue
        data = data[n:]


def recv(fd: int, deadline: float | None = None, limit: int = MAX_MESSAGE_BYTES) -> tuple[dict[str, Any], bytes]:
    """Read one framed message, all of it before ``deadline`` (time.monotonic; None: no limit).

    Raises TimeoutError when the deadline passes, EOFError when the peer closed, ValueError on a
    malformed frame or message.
    """
    (size,) = _FRAME.unpack(read_exact(fd, _FRAME.size, deadline))
    if size > limit:
        raise ValueError(f"frame of {size} bytes announced (limit {limit})")
    return unpack(read_exact(fd, size, deadline))


def read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        _wait(fd, select.POLLIN, deadline)
        try:
            chunk = os.read(fd, min(n - got, _READ_CHUNK))
        except BlockingIOError:
            continue
        except ConnectionError as exc:
            raise EOFError(str(exc)) from None
        if not chunk:
            raise EOFError(f"peer closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def wait_writable(fd: int, deadline: float | None) -> None:
    """Block until ``fd`` can be written, or raise TimeoutError at the deadline."""
    _wait(fd, select.POLLOUT, deadline)


def _wait(fd: int, event: int, deadline: float | None) -> None:
    """Block until ``fd`` is ready for ``event`` (or hung up), or raise TimeoutError at the deadline."""
    poller = select.poll()
    poller.register(fd, event)
    if deadline is None:
        poller.poll()
        return
    left = deadline - time.monotonic()
    if left <= 0 or not poller.poll(max(1, int(left * 1000) + 1)):
        raise TimeoutError("deadline passed")


# dtypes a reference output may have, as numpy can hold them (bf16 travels as its raw uint16 bits)
_NUMPY_DTYPES = {
    "torch.float32": np.float32,
    "torch.float64": np.float64,
    "torch.float16": np.float16,
    "torch.bfloat16": np.uint16,
    "torch.int64": np.int64,
    "torch.int32": np.int32,
    "torch.int16": np.int16,
    "torch.int8": np.int8,
    "torch.uint8": np.uint8,
    "torch.bool": np.bool_,
}


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return _HEADER.pack(len(head)) + head + payload


def unpack(message: bytes) -> tuple[dict[str, Any], bytes]:
    """Parse one message; raises ValueError on anything malformed."""
    if len(message) < _HEADER.size:
        raise ValueError("short message")
    (n,) = _HEADER.unpack_from(message)
    if n > len(message) - _HEADER.size:
        raise ValueError("truncated header")
    try:
        header = json.loads(message[_HEADER.size : _HEADER.size + n].decode())
    except RecursionError:  # a header nested deeper than the parser's stack: a worker's forgery
        raise ValueError("header nested too deep") from None
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, message[_HEADER.size + n :]


def encode_output(out: Any) -> tuple[dict[str, Any], bytes]:
    """Describe a forward's return value (worker side). Only plain tensors carry data."""
    import torch

    if type(out) is not torch.Tensor:
        return {"kind": "other", "type": type(out).__name__}, b""
    t = out.detach()
    dtype = str(t.dtype)
    meta = {"kind": "tensor", "dtype": dtype, "shape": list(t.shape), "strides": list(t.stride()), "device": t.device.type}
    if dtype not in _NUMPY_DTYPES:
        return {**meta, "kind": "unsupported_dtype"}, b""
    t = t.cpu().contiguous()
    if dtype == "torch.bfloat16":
        t = t.view(torch.uint16) if hasattr(torch, "uint16") else t.view(torch.int16)
    return meta, t.numpy().tobytes()


# Inputs travel 64-byte aligned in their payload, so the tensors decoded in place start aligned
# for vector loads, as freshly allocated ones would.
_INPUT_ALIGN = 64


def encode_inputs(inputs: list[Any]) -> tuple[list[dict[str, Any]], bytes]:
    """An input set as metadata and one payload (reference worker side). Tensors travel as raw
    bytes; other arguments as JSON values. Raises ValueError for anything else."""
    import torch

    metas: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for x in inputs:
        if isinstance(x, torch.Tensor):
            dtype = str(x.dtype)
            if dtype not in _NUMPY_DTYPES:
                raise ValueError(f"an input of dtype {dtype} cannot be sent")
            t = x.detach().cpu().contiguous()
            if dtype == "torch.bfloat16":
                t = t.view(torch.int16)
            data = t.numpy().tobytes()
            pad = -offset % _INPUT_ALIGN
            chunks.append(b"\0" * pad + data)
            offset += pad
            metas.append({"kind": "tensor", "dtype": dtype, "shape": list(x.shape), "offset": offset, "nbytes": len(data)})
            offset += len(data)
        elif x is None or isinstance(x, (bool, int, float, str)):
            metas.append({"kind": "value", "value": x})
        else:
            raise ValueError(f"an input of type {type(x).__name__} cannot be sent")
    return metas, b"".join(chunks)


def decode_inputs(metas: list[dict[str, Any]], buffer: Any) -> list[Any]:
    """Rebuild an input set from ``encode_inputs`` (worker side) as CPU tensors over ``buffer``
    (a writable buffer holding the payload: the worker's shared region), without copying."""
    import torch

    inputs: list[Any] = []
    for meta in metas:
        if meta.get("kind") != "tensor":
            inputs.append(meta.get("value"))
            continue
        dtype = getattr(torch, str(meta["dtype"]).removeprefix("torch."))
        raw = torch.int16 if dtype is torch.bfloat16 else dtype
        count = int(meta["nbytes"]) // torch.empty((), dtype=raw).element_size()
        t = torch.frombuffer(buffer, dtype=raw, count=count, offset=int(meta["offset"])) if count else torch.empty(0, dtype=raw)
        inputs.append(t.view(dtype).reshape(meta["shape"]))
    return inputs


def describe_in_place(out: Any) -> tuple[dict[str, Any], Any]:
    """Describe a forward's output for the parent to read out of this process's memory (worker
    side, hardened CPU timing): ``encode_output``'s description plus the ``address`` and
    ``nbytes`` of its elements in row-major order, and the tensor holding them, which must stay
    alive until the parent has read it (a view of ``out`` when contiguous, else a copy). No
    copy into shared memory: a worker's own copy is what a candidate patching its harness could
    skip, and the parent takes the reference's share of a call out of both sides."""
    import torch

    if type(out) is not torch.Tensor:
        return encode_output(out)[0], None
    meta = _describe_tensor(out)
    if meta["kind"] != "tensor":
        return meta, None
    t = out.detach()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    flat = t.reshape(-1)
    return {**meta, "address": flat.data_ptr(), "nbytes": flat.numel() * flat.element_size()}, flat


def _describe_tensor(t: Any) -> dict[str, Any]:
    dtype = str(t.dtype)
    meta = {"kind": "tensor", "dtype": dtype, "shape": list(t.shape), "strides": list(t.stride()), "device": t.device.type}
    return meta if dtype in _NUMPY_DTYPES and t.device.type == "cpu" else {**meta, "kind": "unsupported_dtype"}


def check_output_meta(meta: Any) -> dict[str, Any]:
    """An output description a worker sent, checked field by field before the parent uses any
    of it (a candidate's process writes these: a negative size, strides that are not a list or a
    missing field must be a ``protocol_error``, not an exception in the parent). Raises ValueError."""
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise ValueError("output description is not an object with a kind")
    if meta["kind"] != "tensor":
        return meta
    if str(meta.get("dtype")) not in _NUMPY_DTYPES:
        raise ValueError(f"output dtype {meta.get('dtype')!r} is not a tensor dtype")
    shape, strides = meta.get("shape"), meta.get("strides")
    if not isinstance(shape, list) or len(shape) > 64 or not all(_count(d) for d in shape):
        raise ValueError("output shape is not a list of sizes")
    if not isinstance(strides, list) or len(strides) != len(shape) or not all(_integer(v) for v in strides):
        raise ValueError("output strides do not match its shape")
    for key in ("address", "nbytes"):
        if key in meta and not _count(meta[key]):
            raise ValueError(f"output {key} is not a count")
    return meta


def _integer(v: Any) -> bool:
    return type(v) is int


def _count(v: Any) -> bool:
    return type(v) is int and 0 <= v < 1 << 62


def output_nbytes(meta: dict[str, Any]) -> int:
    """Bytes of the output ``meta`` describes (0 for anything but a tensor); ValueError when
    the description is malformed (``check_output_meta``)."""
    check_output_meta(meta)
    if meta["kind"] != "tensor":
        return 0
    size = int(np.prod(meta["shape"], dtype=object)) * np.dtype(_NUMPY_DTYPES[meta["dtype"]]).itemsize
    if size >= 1 << 62:
        raise ValueError("output size out of range")
    return size


def decode_output(meta: dict[str, Any], payload: bytes) -> np.ndarray | None:
    """Rebuild an output array (parent side); None when the output is not a plain tensor."""
    if meta.get("kind") != "tensor":
        return None
    dtype = _NUMPY_DTYPES.get(str(meta.get("dtype")))
    shape = meta.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError("bad tensor header")
    arr = np.frombuffer(payload, dtype=dtype)
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError("payload size does not match shape")
    arr = arr.reshape(shape)
    if meta["dtype"] == "torch.bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr
