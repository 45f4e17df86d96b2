"""Hand a CUDA tensor from a candidate worker to the reference worker without copying it.

On a GPU, outputs of full-size KernelBench problems reach 8 GiB: piping them through the
parent as bytes would dominate the evaluation. The candidate worker instead exports the output's
allocation as a CUDA IPC handle (the driver API, through ctypes) and the reference worker, which
never loads candidate code, maps it read-only in spirit and compares it on the GPU.

Only plain data crosses: a 64-byte handle, an offset and sizes, checked against what the driver
reports for the mapped allocation, so a forged header cannot make the reference read outside it.
torch's own CUDA tensor sharing is not used on the receiving side: it would open a shared-memory
reference counter named by the (untrusted) sender.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1
_DTYPES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_ubyte * 64)]  # not c_char: its value stops at the first NUL


_driver: ctypes.CDLL | None = None


def _cuda() -> ctypes.CDLL:
    global _driver
    if _driver is None:
        _driver = ctypes.CDLL("libcuda.so.1")
    return _driver


def _fn(name: str) -> Any:
    lib = _cuda()
    for symbol in (f"{name}_v2", name):
        if hasattr(lib, symbol):
            return getattr(lib, symbol)
    raise OSError(f"libcuda has no {name}")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA driver error {status}")


def _address_range(ptr: int) -> tuple[int, int]:
    base, size = ctypes.c_uint64(), ctypes.c_size_t()
    _check(_fn("cuMemGetAddressRange")(ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(ptr)), "cuMemGetAddressRange")
    return base.value, size.value


def export(tensor: Any, sync: bool = True) -> dict[str, Any]:
    """Describe a CUDA tensor so another process on the same device can map it. ``sync``: wait
    until the device is idle (the tensor complete) first; without, the reader orders its read
    behind an event itself."""
    import torch

    t = tensor.detach()
    storage = t.untyped_storage()
    ptr = storage.data_ptr()
    base, _ = _address_range(ptr)
    handle = _IpcHandle()
    _check(_fn("cuIpcGetMemHandle")(ctypes.byref(handle), ctypes.c_uint64(base)), "cuIpcGetMemHandle")
    if sync:
        torch.cuda.synchronize()  # the output must be complete before another process reads it
    return {
        "kind": "tensor",
        "ipc": bytes(handle.reserved).hex(),
        "offset": ptr - base,
        "storage_bytes": storage.nbytes(),
        "storage_offset": t.storage_offset(),
        "dtype": str(t.dtype),
        "shape": list(t.shape),
        "strides": list(t.stride()),
        "device": t.device.type,
    }


def _valid(meta: dict[str, Any]) -> bool:
    ints = [
        meta.get("offset"),
        meta.get("storage_bytes"),
        meta.get("storage_offset"),
        *meta.get("shape", [None]),
        *meta.get("strides", []),
    ]
    return (
        isinstance(meta.get("ipc"), str)
        and len(meta["ipc"]) == 128
        and str(meta.get("dtype", "")).removeprefix("torch.") in _DTYPES
        and isinstance(meta.get("shape"), list)
        and isinstance(meta.get("strides"), list)
        and len(meta["shape"]) == len(meta["strides"])
        and all(type(v) is int and v >= 0 for v in ints)
    )


def _raw_view(ptr: int, nbytes: int) -> Any:
    """A zero-copy uint8 CUDA tensor over ``nbytes`` at device address ``ptr``."""
    import torch

    class _Raw:  # the CUDA array interface
        __cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, False),  # torch accepts writable views only
            "version": 3,
            "strides": None,
        }

    return torch.as_tensor(_Raw(), device="cuda")


@contextmanager
def dedicated(nbytes: int) -> Iterator[Any]:
    """A uint8 CUDA tensor of ``nbytes`` in an allocation of its own (the driver's, not torch's
    caching allocator). What is exported to an untrusted process must be: a handle maps the whole
    allocation its address lies in, and a block carved from one of torch's segments would hand
    over the trusted tensors that share the segment."""
    import torch

    torch.cuda.current_stream()  # the device's primary context current on this thread
    dptr = ctypes.c_uint64()
    _check(_fn("cuMemAlloc")(ctypes.byref(dptr), ctypes.c_size_t(max(1, nbytes))), "cuMemAlloc")
    try:
        raw = _raw_view(dptr.value, nbytes)
        try:
            yield raw
        finally:
            del raw
            torch.cuda.synchronize()
    finally:
        _fn("cuMemFree")(dptr)


@contextmanager
def opened(meta: dict[str, Any]) -> Iterator[Any]:
    """Map the tensor ``meta`` describes (see :func:`export`); raises ValueError if it is malformed."""
    import torch

    if not _valid(meta):
        raise ValueError("malformed shared-tensor header")
    base, mapped = _open(meta["ipc"])
    try:
        tensor = _view(base, mapped, meta)
        try:
            yield tensor
        finally:
            del tensor
            torch.cuda.synchronize()
    finally:
        _fn("cuIpcCloseMemHandle")(ctypes.c_uint64(base))


def _open(key: str) -> tuple[int, int]:
    """Open the allocation a handle (hex) names: its base address here and its size."""
    handle = _IpcHandle()
    ctypes.memmove(ctypes.addressof(handle), bytes.fromhex(key), 64)
    dptr = ctypes.c_uint64()
    status = _fn("cuIpcOpenMemHandle")(ctypes.byref(dptr), handle, ctypes.c_uint(_CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS))
    if status != 0:
        raise ValueError(f"cannot open the shared output (CUDA driver error {status})")
    return dptr.value, _address_range(dptr.value)[1]


def _view(base: int, mapped: int, meta: dict[str, Any]) -> Any:
    """The tensor ``meta`` describes inside an allocation mapped at ``base`` (``mapped`` bytes)."""
    import torch

    if meta["offset"] + meta["storage_bytes"] > mapped:
        raise ValueError("shared output extends beyond its allocation")
    dtype = getattr(torch, str(meta["dtype"]).removeprefix("torch."))
    raw = _raw_view(base + meta["offset"], meta["storage_bytes"])
    usable = meta["storage_bytes"] - meta["storage_bytes"] % dtype.itemsize
    try:
        return raw[:usable].view(dtype).as_strided(meta["shape"], meta["strides"], meta["storage_offset"])
    except RuntimeError as exc:  # sizes and strides beyond the storage
        raise ValueError(f"shared output out of bounds: {exc}") from None


class Mappings:
    """Allocations another process exported, each opened once and kept open until ``close``: the
    GPU-timeline clock reads a worker's outputs where its forward left them, window after window
    (torch's caching allocator hands the same blocks back, so a few mappings serve them all)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.open: dict[str, tuple[int, int]] = {}  # handle (hex) -> (base, mapped bytes)

    def view(self, meta: dict[str, Any]) -> Any:
        """The tensor ``meta`` describes (see :func:`export`); raises ValueError if it is malformed."""
        if not _valid(meta):
            raise ValueError("malformed shared-tensor header")
        key = meta["ipc"]
        if key not in self.open:
            if len(self.open) >= self.limit:
                self.close()
            self.open[key] = _open(key)
        return _view(*self.open[key], meta)

    def close(self) -> None:
        import torch

        if self.open:
            torch.cuda.synchronize()  # no copy from them may still be running
        for base, _ in self.open.values():
            _fn("cuIpcCloseMemHandle")(ctypes.c_uint64(base))
        self.open.clear()
