"""`lmsys-pref dist --nproc N predict|train ...`: the multi-process commands, under torchrun.

    lmsys-pref dist --nproc 2 predict --model-dir M --data-dir D --out-dir O [-p k v]
    lmsys-pref dist --nproc 2 train gemma --data-dir D --out-dir O [--preset P] [-p k v]

Starts `python -m torch.distributed.run --nproc-per-node N -m lmsys_pref.commands.distributed ...`
(gloo on CPU, NCCL on GPUs; see `commands.distributed`) and returns its exit status. This module
imports no torch: the launcher is torch's own, in a child process.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

VERBS = ("predict", "train")


def torchrun_argv(nproc: int, verb: str, rest: list[str]) -> list[str]:
    """The command line that runs `commands.distributed <verb> <rest>` on `nproc` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "-m", "lmsys_pref.commands.distributed", verb, *rest]


def cli_main(argv: list[str]) -> int:
    """`lmsys-pref dist [--nproc N] predict|train ...`; the verb's own options follow it."""
    ap = argparse.ArgumentParser(prog="lmsys-pref dist", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2, help="processes (one per GPU; default 2)")
    ap.add_argument("verb", choices=VERBS, help="predict or train; its options follow")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nproc < 1:
        ap.error(f"--nproc must be at least 1, got {args.nproc}")
    return subprocess.call(torchrun_argv(args.nproc, args.verb, args.rest))
