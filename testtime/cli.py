"""Command line: ``testtime evaluate --problem P.py --candidate C.py [C2.py ...] --device cpu --json``.

Several candidates of one problem share one evaluator: its reference worker (and on a GPU its
clock process) start once, so the fixed costs (importing torch, initialising CUDA, the
reference's outputs) are paid once per call, not per candidate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testtime.evaluation import EvalSettings, Evaluator
from testtime.prompting import candidate_code, candidate_source, read_candidate


def _evaluate(args: argparse.Namespace) -> int:
    problem = Path(args.problem).read_text()
    settings = EvalSettings(
        protocol=args.protocol,
        device=args.device,
        correctness_trials=args.trials,
        timing_pairs=args.timing_pairs,
        timeout_s=args.timeout,
        candidate_budget_s=args.budget,
        memory_mb=args.memory_mb,
    )
    with Evaluator(problem, settings) as ev:
        for path in args.candidate:
            raw = read_candidate(Path(path).read_text())  # a Python file as written; a completion extracted
            result = ev.evaluate(candidate_source(raw, problem, mode="auto"), candidate_code(raw, mode="auto")).as_dict()
            if len(args.candidate) > 1:
                result = {"candidate": path, **result}
            if args.json:
                print(json.dumps(result), flush=True)  # one line per candidate
                continue
            verdict = "correct" if result["correct"] else f"incorrect ({result['error_kind']})"
            print(
                f"{path if len(args.candidate) > 1 else ''}{': ' if len(args.candidate) > 1 else ''}{verdict}; speedup {result['speedup']:.3f}x"
            )
            if result["error_message"]:
                print(result["error_message"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testtime")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="judge one candidate against a KernelBench-format problem")
    ev.add_argument("--problem", required=True, help="KernelBench-format module: class Model, get_inputs, get_init_inputs")
    ev.add_argument("--candidate", required=True, nargs="+", help="body-only forwards or full ModelNew modules")
    ev.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ev.add_argument("--json", action="store_true", help="print one JSON object per candidate (one per line)")
    defaults = EvalSettings()
    ev.add_argument("--trials", type=int, default=defaults.correctness_trials, help="correctness trials")
    ev.add_argument("--timing-pairs", type=int, default=defaults.timing_pairs, help="interleaved timing pairs")
    ev.add_argument("--protocol", choices=["hardened", "kernelbench"], default=defaults.protocol)
    ev.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds per worker request")
    ev.add_argument("--budget", type=float, default=defaults.candidate_budget_s, help="seconds per candidate, all phases")
    ev.add_argument("--memory-mb", type=int, default=defaults.memory_mb, help="candidate memory cap (CPU)")
    args = parser.parse_args(argv)
    for path in (args.problem, *args.candidate):
        if not Path(path).is_file():
            parser.error(f"no such file: {path}")
    return _evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
