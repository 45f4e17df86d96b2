"""The byte protocol between the trusted parent and its worker processes.

``multiprocessing.Connection.recv`` unpickles, and unpickling bytes written by a process that
ran model-generated code would run that code in the parent. Every message is therefore a JSON
header plus an optional raw tensor payload, parsed strictly by the parent.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

_HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 1 << 31

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
    header = json.loads(message[_HEADER.size : _HEADER.size + n].decode())
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
