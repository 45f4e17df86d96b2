"""Confinement of a candidate worker process (Linux), applied before candidate code loads.

- A new session, so the parent can kill everything the candidate forks with one ``killpg``.
- A keeper process above each worker is a child subreaper (``set_child_subreaper``): whatever
  the candidate forks, double-forked and ``setsid`` daemons included, is reparented to the keeper
  rather than to init, so it stays in the keeper's subtree, where ``kill_tree`` finds and kills
  it. Unprivileged, and needs neither systemd nor cgroups.
- rlimits: address space (CPU; CUDA reserves huge virtual ranges), data segment (GPU, set once
  CUDA is initialised: ``cap_host_data``), file size, no core dumps.
- Landlock (Linux >= 5.13): the process may read and execute only the interpreter, its packages
  and system libraries, read/write only its scratch directory, and (ABI >= 4) neither bind nor
  connect TCP sockets, and (ABI >= 6) not signal processes outside its domain. Results, caches and the rest of the file system are invisible to it.
  Where Landlock is unavailable the record says ``sandbox: rlimits`` instead of ``landlock``.
- seccomp (x86_64, aarch64): ``protect_others`` stops the process from changing the scheduling
  (affinity, priority, policy), limits or I/O priority of any process but itself (of a CPU
  candidate pinned to its allotted cores, its own affinity, perf events, bpf and userfaultfd too), and from ptrace
  or cross-process memory access; ``no_processes`` (a sealed CPU candidate) from starting processes, io_uring and
  timers; ``no_signals_out`` (installed once the candidate has
  loaded, so that compilers it runs may still manage their children) stops it from signalling
  any process but itself. Both fail the call with EPERM; they hold where Landlock is missing or
  too old to scope signals.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import sys
import sysconfig
from collections.abc import Callable

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
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


def confine(scratch: str, memory_mb: int, device: str, use_landlock: bool = True, shm: bool = False) -> str:
    """Apply every limit this platform supports; returns the sandbox level for the record.
    ``shm``: files may be created in /dev/shm (the GPU-timeline clock, a trusted process, creates
    the CUDA IPC events there, which the workers it times may open but not create)."""
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
    writable: tuple[str, ...] = ()
    if device.startswith("cuda"):
        # The CUDA driver writes under /proc/<pid> while it initialises (measured on an H100:
        # cudaGetDeviceCount fails with error 304 otherwise): initialise it before Landlock, and
        # let this process write its own /proc entry, nothing else there.
        import warnings

        import torch

        with warnings.catch_warnings():  # NVML may be out of reach in a new session; CUDA is what counts
            warnings.simplefilter("ignore")
            torch.cuda.init()
            torch.empty(1, device=device)
        writable = (f"/proc/{os.getpid()}",) + (("/dev/shm",) if shm else ())
        if memory_mb > 0:
            cap_host_data(memory_mb)
    if not use_landlock:
        return "rlimits"
    return "landlock" if landlock(scratch, device, writable=writable) else "rlimits"


def cap_host_data(memory_mb: int) -> None:
    """A GPU worker's host-memory cap, set once CUDA is initialised: RLIMIT_DATA (private
    writable mappings: the heap and anonymous mmaps) at what it holds now plus ``memory_mb``.
    Not RLIMIT_AS, which the driver's huge virtual reservations break; device allocations are
    not private writable host mappings, so they do not count. A 60 GB host allocation then fails
    at once (``oom``) instead of paging until the request times out."""
    with open("/proc/self/status") as f:
        data_kb = next(int(line.split()[1]) for line in f if line.startswith("VmData:"))
    limit = data_kb * 1024 + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


# --- process trees -----------------------------------------------------------------------------


def set_child_subreaper(parent_death_signal: int | None = signal.SIGTERM) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux >= 3.4).

    ``parent_death_signal``: delivered to this process when its parent dies, so that a keeper
    never outlives the evaluation that started it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if parent_death_signal is not None:
        libc.prctl(_PR_SET_PDEATHSIG, int(parent_death_signal), 0, 0, 0)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads), zombies included; [] once it is gone."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def _identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time) of a process that has not exited, else None. The start time tells a
    reused pid from the process that had it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # a zombie holds no resources and runs no code
        return None
    return pid, int(fields[19])


def is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited (or is gone)."""
    return _identity(pid) is None


def _live_descendants(pid: int) -> list[tuple[int, int]]:
    found, queue, seen = [], [pid], {pid}
    while queue:
        for child in children(queue.pop(0)):
            if child not in seen:
                seen.add(child)
                queue.append(child)
                if (identity := _identity(child)) is not None:
                    found.append(identity)
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, breadth first."""
    return [p for p, _ in _live_descendants(pid)]


def kill_tree(root: int, rounds: int = 1000) -> int:
    """SIGKILL every process below ``root`` (not ``root`` itself), until a round finds none it
    has not killed already. A process with SIGKILL pending runs no more code and forks no more
    (the kernel aborts a fork in flight), so it is done with even while its exit takes time.

    ``root`` should be a child subreaper: a process whose parent is killed first is reparented
    to it and found on the next round, as are processes forked between two rounds. Returns how
    many processes the last round still found new (0: the whole subtree is dead or dying).
    """
    killed: set[tuple[int, int]] = set()
    fresh: list[tuple[int, int]] = []
    for _ in range(rounds):
        fresh = [p for p in _live_descendants(root) if p not in killed]
        if not fresh:
            return 0
        for pid, _ in fresh:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        killed.update(fresh)
    return len(fresh)


def kill_group(pid: int) -> None:
    """SIGKILL the process group (= session) led by ``pid``: atomic against fork loops in it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- seccomp -------------------------------------------------------------------------------------

# Syscall numbers (checked against linux/unistd.h: asm/unistd_64.h and asm-generic/unistd.h).
_SYSCALLS = {
    "x86_64": {
        "arch": 0xC000003E,
        "seccomp": 317,
        "clone": 56,
        "clone3": 435,
        "fork": 57,
        "vfork": 58,
        "io_uring_setup": 425,
        "setpriority": 141,
        "sched_setparam": 142,
        "sched_setscheduler": 144,
        "sched_setaffinity": 203,
        "sched_setattr": 314,
        "prlimit64": 302,
        "ioprio_set": 251,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "pidfd_getfd": 438,
        "kill": 62,
        "tkill": 200,
        "tgkill": 234,
        "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297,
        "pidfd_send_signal": 424,
        "perf_event_open": 298,
        "bpf": 321,
        "userfaultfd": 323,
        "timer_create": 222,
        "timerfd_create": 283,
        "setitimer": 38,
        "alarm": 37,
    },
    "aarch64": {
        "arch": 0xC00000B7,
        "seccomp": 277,
        "clone": 220,
        "clone3": 435,
        "io_uring_setup": 425,
        "setpriority": 140,
        "sched_setparam": 118,
        "sched_setscheduler": 119,
        "sched_setaffinity": 122,
        "sched_setattr": 274,
        "prlimit64": 261,
        "ioprio_set": 30,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "pidfd_getfd": 438,
        "kill": 129,
        "tkill": 130,
        "tgkill": 131,
        "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240,
        "pidfd_send_signal": 424,
        "perf_event_open": 241,
        "bpf": 280,
        "userfaultfd": 282,
        "timer_create": 107,
        "timerfd_create": 85,
        "setitimer": 103,
    },
}
_X32_SYSCALL_BIT = 0x40000000
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, _SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1, 1, 4
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _arg(i: int) -> int:
    """Offset of the low 32 bits of syscall argument ``i`` in struct seccomp_data (little endian).
    The pid, which and who arguments are C ints: the kernel ignores the high half."""
    return 16 + 8 * i


# a rule that fails its syscall with ENOSYS instead of EPERM: callers that fall back on ENOSYS
# (glibc's pthread_create tries clone3, then clone) keep working
NOSYS = "nosys"
Rules = dict[str, "list[tuple[int, set[int]]] | None | str"]


def _program(table: dict[str, int], rules: Rules) -> list[tuple[int, int, int, int]]:
    """A BPF program: for each syscall in ``rules``, allow it only when every (argument, allowed
    values) condition holds (None: never; NOSYS: never, as if it did not exist), else fail it
    with EPERM; everything else is allowed. A foreign architecture or x32 call fails with ENOSYS."""
    deny, nosys = _RET_ERRNO | errno.EPERM, _RET_ERRNO | errno.ENOSYS
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ_K, 1, 0, table["arch"]),
        (_RET_K, 0, 0, nosys),
        (_LD_W_ABS, 0, 0, 0),
    ]
    if table is _SYSCALLS["x86_64"]:
        prog += [(_JGE_K, 0, 1, _X32_SYSCALL_BIT), (_RET_K, 0, 0, nosys)]
    for name, conditions in rules.items():
        if name not in table:  # a syscall this architecture does not have (fork on aarch64)
            continue
        if conditions == NOSYS:
            prog += [(_JEQ_K, 0, 1, table[name]), (_RET_K, 0, 0, nosys)]
            continue
        block: list[tuple[int, int, int, int]] = []
        for arg, values in conditions or []:
            # load the argument; on the first matching value skip to the next condition, else deny
            values = sorted(values)
            block.append((_LD_W_ABS, 0, 0, _arg(arg)))
            for i, value in enumerate(values):
                block.append((_JEQ_K, len(values) - i, 0, value))
            block.append(("DENY", 0, 0, 0))
        block.append((_RET_K, 0, 0, _RET_ALLOW) if conditions else (_RET_K, 0, 0, deny))
        if conditions:
            block.append((_RET_K, 0, 0, deny))
        # resolve the "DENY" markers: jump to the block's final ret-deny
        resolved = []
        for pos, (code, jt, jf, k) in enumerate(block):
            if code == "DENY":
                resolved.append((0x05, 0, 0, len(block) - 1 - pos - 1))  # BPF_JMP|BPF_JA
            else:
                resolved.append((code, jt, jf, k))
        prog.append((_JEQ_K, 0, len(resolved), table[name]))
        prog += resolved  # every path through a block returns: the accumulator still holds nr after it
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    return prog


def _install(rules_of: Callable[[dict[str, int]], Rules]) -> bool:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        return False
    prog = _program(table, rules_of(table))
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    # TSYNC: every thread of the process (torch's pool included) gets the filter, not only this one.
    # SPEC_ALLOW: keep the speculation mitigations as they were. Kernels before 5.16 otherwise
    # force Speculative Store Bypass Disable on a process with a filter (spec_store_bypass_disable
    # =seccomp), which slows its code against the unfiltered reference's; older kernels without
    # the flag refuse it (EINVAL), and get the filter alone.
    for flags in (_SECCOMP_FILTER_FLAG_TSYNC | _SECCOMP_FILTER_FLAG_SPEC_ALLOW, _SECCOMP_FILTER_FLAG_TSYNC):
        if libc.syscall(table["seccomp"], _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog)) == 0:
            return True
    return False


def protect_others(pinned: bool = False) -> bool:
    """seccomp: scheduling, limits and memory of other processes are out of reach (``pinned``, a
    CPU candidate on the cores it was given: its own CPU affinity too, and perf events, bpf and
    userfaultfd); False when this platform has no seccomp filter support (or an unknown
    architecture)."""
    me = {0, os.getpid()}

    def rules(table: dict[str, int]) -> Rules:
        # Interrupts are billed to whatever task runs when they hit (no IRQ time accounting on
        # the kernels measured): CPU-wide sampling events on the core the reference shares timed
        # the reference's own forward at 9.5x as the candidate (red team, round 4). bpf and
        # userfaultfd: other ways to run code, or stall a reader, from the kernel. A CPU
        # candidate only, for now: a GPU one is timed on the GPU timeline, and this filter has
        # not yet run beside a CUDA driver.
        cpu_only: Rules = {"perf_event_open": None, "bpf": None, "userfaultfd": None} if pinned else {}
        return {
            "setpriority": [(0, {0}), (1, me)],  # PRIO_PROCESS of itself only (not PRIO_PGRP/PRIO_USER)
            "sched_setaffinity": None if pinned else [(0, me)],
            "sched_setscheduler": [(0, me)],
            "sched_setparam": [(0, me)],
            "sched_setattr": [(0, me)],
            "prlimit64": [(0, me)],
            "ioprio_set": [(0, {1}), (1, me)],  # IOPRIO_WHO_PROCESS of itself only
            "ptrace": None,
            "process_vm_readv": None,
            "process_vm_writev": None,
            "pidfd_getfd": None,
            **cpu_only,
        }

    return _install(rules)


def no_signals_out() -> bool:
    """seccomp: signals only to this process itself (kill(0) reaches its own process group)."""
    me = {0, os.getpid()}

    def rules(table: dict[str, int]) -> Rules:
        return {
            "kill": [(0, me)],
            "tgkill": [(0, {os.getpid()})],
            "rt_sigqueueinfo": [(0, {os.getpid()})],
            "rt_tgsigqueueinfo": [(0, {os.getpid()})],
            "tkill": None,
            "pidfd_send_signal": None,
        }

    return _install(rules)


# glibc's pthread_create: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
# CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID
_THREAD_CLONE_FLAGS = 0x3D0F00


def no_processes() -> bool:
    """seccomp: from now on this process starts threads (counted by the parent) but no process,
    no io_uring and no timer. The parent times a hardened CPU candidate by its process CPU clock, which
    counts every thread, exited ones included, but not a child process or kernel workers: work
    moved there would be free (a fork that computes the output into shared memory and exits
    before the parent looks for strays)."""

    def rules(table: dict[str, int]) -> Rules:
        return {
            "clone": [(0, {_THREAD_CLONE_FLAGS})],
            "clone3": NOSYS,  # glibc then creates threads through clone
            "fork": None,
            "vfork": None,
            "io_uring_setup": None,
            # timers fire as interrupts on the shared core, billed to whoever runs then (the
            # reference, while the candidate's worker waits): no timer of its own to fire
            "timer_create": None,
            "timerfd_create": None,
            "setitimer": None,
            "alarm": None,
        }

    return _install(rules)
