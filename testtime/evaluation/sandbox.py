"""Confinement of a candidate worker process (Linux), applied before candidate code loads.

- A new session, so the parent can kill everything the candidate forks with one ``killpg``.
- rlimits: address space (CPU only; CUDA reserves huge virtual ranges), file size, no core dumps.
- Landlock (Linux >= 5.13): the process may read and execute only the interpreter, its packages
  and system libraries, read/write only its scratch directory, and (ABI >= 4) neither bind nor
  connect TCP sockets, and (ABI >= 6) not signal processes outside its domain. Results, caches and the rest of the file system are invisible to it.
  Where Landlock is unavailable the record says ``sandbox: rlimits`` instead of ``landlock``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import sysconfig

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1

# LANDLOCK_ACCESS_FS_* bits
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_WRITE_ALL = sum(1 << b for b in range(4, 13))  # remove_dir .. make_sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _readable_roots() -> list[str]:
    roots = {"/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys", "/dev", "/opt", sys.prefix, sys.base_prefix}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    import torch  # already imported by the parent; locates a venv outside sys.prefix

    roots.add(os.path.dirname(os.path.dirname(torch.__file__)))
    import testtime

    roots.add(os.path.dirname(testtime.__file__))
    return sorted(r for r in roots if os.path.exists(r))


def landlock(scratch: str, device: str = "cpu", writable: tuple[str, ...] = (), scope: bool = True, net: bool = True) -> bool:
    """Restrict this process's file-system and TCP access; False when the kernel cannot.

    ``writable``: more paths opened read-write (the CUDA driver's needs); ``scope``/``net``:
    whether to add the ABI>=6 IPC scoping and the ABI>=4 TCP rules.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_SYS_CREATE_RULESET, None, 0, 1)
    if abi < 1:
        return False
    fs = _READ | _WRITE_ALL | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 and net else 0
    scoped = 0x3 if abi >= 6 and scope else 0  # no abstract unix sockets, no signals to processes outside
    attr = _RulesetAttr(fs, net, scoped)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return False
    try:
        file_only = _EXECUTE | _READ_FILE | _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0)
        rules = [(r, _READ) for r in _readable_roots()] + [(scratch, fs), ("/dev/null", _READ_FILE | _WRITE_FILE)]
        if device.startswith("cuda"):
            # the CUDA driver opens /dev/nvidia* read-write and talks to them through ioctl
            rules.append(("/dev", _READ | _WRITE_FILE | (_IOCTL_DEV if abi >= 5 else 0)))
        rules += [(path, fs) for path in writable if os.path.exists(path)]
        for root, access in rules:
            fd = os.open(root, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = access if os.path.isdir(root) else access & file_only
                rule = _PathBeneathAttr(allowed & fs, fd)
                if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    return False
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) == 0
    finally:
        os.close(ruleset)


def confine(scratch: str, memory_mb: int, device: str, use_landlock: bool = True) -> str:
    """Apply every limit this platform supports; returns the sandbox level for the record."""
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))
    if device == "cpu" and memory_mb > 0:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * resource.getpagesize()
        limit = current + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ["TMPDIR"] = scratch
    os.environ["CUDA_CACHE_PATH"] = os.path.join(scratch, "cuda_cache")
    os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(scratch, "torch_extensions")
    os.chdir(scratch)
    if not use_landlock:
        return "rlimits"
    if device.startswith("cuda"):
        # The CUDA driver writes under /proc/<pid> while it initialises (measured on an H100:
        # cudaGetDeviceCount fails with error 304 otherwise). The caller initialises CUDA first
        # and the rules also let this process write its own /proc entry, nothing else there.
        import warnings

        import torch

        with warnings.catch_warnings():  # NVML may be out of reach in a new session; CUDA is what counts
            warnings.simplefilter("ignore")
            torch.cuda.init()
            torch.empty(1, device=device)
        writable: tuple[str, ...] = (f"/proc/{os.getpid()}",)
    else:
        writable = ()
    return "landlock" if landlock(scratch, device, writable=writable) else "rlimits"
