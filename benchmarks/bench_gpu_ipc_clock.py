"""A design probe for issue 11's GPU timing (not the evaluator): a worker's forward timed on the
GPU timeline by a trusted clock process, with identical code in two workers.

The clock (this process) draws the inputs into a tensor shared by CUDA IPC, records an
interprocess event R and right after it its own start event E0; the worker's stream waits on R
before its forward and records an interprocess event D after it; the clock waits on D, then
records E1. E1 - E0 covers the forward and the hand-over between the two CUDA contexts, not the
drawing. An optional gate (GATE_CYCLES of ``torch.cuda._sleep`` before the draw) keeps the GPU
busy until the worker's forward is queued, so the host pipe's latency stays out of the interval.

Usage: python benchmarks/bench_gpu_ipc_clock.py [GATE_CYCLES]   (needs one CUDA GPU; ~3 min)
Prints per shape the forward time, the range and sd of 5-pair median ratios over 12 evaluations
(6 pairs of workers) and the range of the per-pair ratios. Results: docs/gpu-validation.md."""

import os
import statistics
import sys
import time

import torch
import torch.multiprocessing as mp


def worker(conn, kind):
    torch.cuda.set_device(0)
    stream = torch.cuda.Stream()
    x, r_handle = conn.recv()
    ready = torch.cuda.Event.from_ipc_handle(0, r_handle)
    done = torch.cuda.Event(interprocess=True)
    conn.send(done.ipc_handle())
    w = torch.randn(4096, 4096, device="cuda") if kind == "matmul" else None
    while True:
        msg = conn.recv()
        if msg is None:
            return
        with torch.cuda.stream(stream):
            stream.wait_event(ready)
            out = x @ w if kind == "matmul" else torch.nn.functional.softplus(x)
            done.record(stream)
        conn.send(1)
        stream.synchronize()
        del out


def evaluation(kind, shape, pairs):
    ctx = mp.get_context("spawn")
    x = torch.empty(shape, device="cuda")
    ready = torch.cuda.Event(interprocess=True)
    ready.record()
    procs, conns, dones = [], [], []
    for _ in range(2):
        a, b = ctx.Pipe()
        p = ctx.Process(target=worker, args=(b, kind))
        p.start()
        a.send((x, ready.ipc_handle()))
        dones.append(torch.cuda.Event.from_ipc_handle(0, a.recv()))
        procs.append(p)
        conns.append(a)
    gen = torch.Generator(device="cuda")
    times = {0: [], 1: []}

    def window(i):
        if GATE:
            torch.cuda._sleep(GATE)  # keeps the GPU busy while the worker queues its forward
        gen.manual_seed(int.from_bytes(os.urandom(6), "little"))
        torch.randn(shape, device="cuda", generator=gen, out=x)  # drawn before the start event
        ready.record()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        conns[i].send(1)
        conns[i].recv()
        torch.cuda.current_stream().wait_event(dones[i])
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) * 1e3  # us

    for _ in range(5):  # warm-up
        window(0), window(1)
    for p in range(pairs):
        order = (0, 1) if p % 2 == 0 else (1, 0)
        for i in order:
            times[i].append(window(i))
    for c in conns:
        c.send(None)
    for p in procs:
        p.join()
    ratios = [a / b for a, b in zip(times[0], times[1])]
    return statistics.median(times[0]), ratios


GATE = int(sys.argv[1]) if len(sys.argv) > 1 else 0

if __name__ == "__main__":
    torch.cuda.init()
    for kind, shape in (("softplus", (4096, 393216 // 4)), ("softplus", (16, 16384)), ("matmul", (4096, 4096))):
        meds, spread = [], []
        for _ in range(6):
            t = time.time()
            fwd, ratios = evaluation(kind, shape, 10)
            meds.append(statistics.median(ratios[:5]))
            meds.append(statistics.median(ratios[5:]))
            spread += ratios
        print(
            f"{kind} {shape}: forward {fwd:.0f} us; 5-pair medians {min(meds):.4f}..{max(meds):.4f} (sd {statistics.pstdev(meds):.4f}); "
            f"pairs {min(spread):.3f}..{max(spread):.3f}; p5/p95 of medians {sorted(meds)[0]:.4f}/{sorted(meds)[-1]:.4f} [{time.time() - t:.1f} s/eval]",
            flush=True,
        )
