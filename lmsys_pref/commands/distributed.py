"""Scoring and training across processes and nodes (`torchrun`, `accelerate launch`).

Each process (rank) scores its shard of the rows on its own device and rank 0 gathers the
results in input order and writes the outputs; training runs the HF `Trainer` in DDP, which
picks the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR) up by itself.

    torchrun --nproc-per-node 2 -m lmsys_pref.commands.distributed predict \
        --model-dir runs/gemma --data-dir data/sample --out-dir runs/predict-ddp
    torchrun --nproc-per-node 2 -m lmsys_pref.commands.distributed train gemma \
        --preset tiny-gemma2 --data-dir data/sample --out-dir runs/gemma-ddp [-p key value]

Backends: NCCL on GPUs, gloo on CPU (what the tests use). Without a launcher (WORLD_SIZE unset)
everything runs as a single process.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..infer.devices import shard  # noqa: F401 (this rank's rows; public here too)

log = logging.getLogger("lmsys_pref.commands.distributed")


def init(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group the launcher describes; returns (rank, world size, device).

    A process started without a launcher is rank 0 of a world of 1 and joins nothing.
    """
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = (torch.device("cuda", local % torch.cuda.device_count()) if cuda
              else torch.device("cpu"))
    if cuda:
        torch.cuda.set_device(device)  # NCCL object collectives use the current device
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    if not dist.is_initialized():
        return 0, 1, device
    return dist.get_rank(), dist.get_world_size(), device


def gather(part: np.ndarray | None, index: np.ndarray, n_rows: int, error: str | None = None,
           extra=None) -> tuple[np.ndarray, list] | None:
    """Collect every rank's rows on rank 0, in input order.

    Every rank must call it, failed or not (pass `error`), so that no rank waits forever; rank 0
    then raises naming the failed rank(s).

    Returns:
        On rank 0 `(probs (n_rows, k), [extra of each rank])`; None elsewhere.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    payload = (rank, index, part, error, extra)
    parts = [None] * world if rank == 0 else None
    dist.gather_object(payload, parts, dst=0)
    if rank != 0:
        return None
    errors = [f"rank {r}: {e}" for r, _, _, e, _ in parts if e]
    if errors:
        raise RuntimeError("distributed scoring failed: " + "; ".join(errors))
    width = next(p.shape[1] for _, _, p, _, _ in parts if p is not None and len(p))
    out = np.full((n_rows, width), np.nan)
    for _, idx, p, _, _ in parts:
        out[idx] = p
    missing = np.flatnonzero(np.isnan(out).any(1))
    if len(missing):
        raise RuntimeError(f"distributed scoring: rows {missing[:10].tolist()} were not scored")
    return out, [x for *_, x in parts]


def predict_ids(model, input_ids: list[list[int]], **kwargs) -> np.ndarray | None:
    """`infer.engine.predict_ids` across the ranks of the process group.

    Each rank scores its shard on its own device (kwargs as `engine.predict_ids`, without
    `devices`); rank 0 returns the (n, 3) probabilities in input order, the others None.
    """
    from ..infer import engine

    rank, world, device = init()
    if world == 1:
        return engine.predict_ids(model, input_ids, devices=[device], **kwargs)
    idx = shard([len(r) for r in input_ids], rank, world)
    probs, error = None, None
    try:
        probs = engine.predict_ids(model, [input_ids[i] for i in idx], devices=[device], **kwargs)
    except Exception as err:  # reported to rank 0 through the gather, then re-raised here
        error = f"{type(err).__name__}: {err}"
    out = gather(probs, idx, len(input_ids), error)
    if error:
        raise RuntimeError(f"rank {rank}: {error}")
    return None if out is None else out[0]


def merge_stats(parts: list[dict]) -> dict:
    """Per-rank predictor stats as one: counts add up, seconds is the slowest rank's."""
    parts = [p or {} for p in parts]
    out = {k: sum(p.get(k) or 0 for p in parts)
           for k in ("rows", "scored_rows", "tokens", "computed_tokens", "batches", "oom_retries")}
    out["seconds"] = max((p.get("seconds") or 0) for p in parts)
    out["tokens_per_s"] = out["tokens"] / out["seconds"] if out["seconds"] else None
    out["padding_efficiency"] = (out["tokens"] / out["computed_tokens"]
                                 if out["computed_tokens"] else None)
    out["devices"] = [d for p in parts for d in p.get("devices", [])]
    return out


def predict(cfg) -> dict | None:
    """`predict.predict` across ranks: each scores a shard of test.csv, rank 0 writes the
    submission (only when every rank succeeded) and predict.json."""
    import time

    from .. import runs
    from . import predict as predict_mod

    t0 = time.perf_counter()
    if cfg.stages:  # each stage would need the ranks' blends of the stages before it
        raise ValueError("predict-dist: -p cascade runs in one process; use make predict "
                         "(every stage scores on all of `devices`)")
    rank, world, device = init()
    if world == 1:
        return predict_mod.predict(cfg)
    if rank == 0:
        runs.prepare_out_dir(cfg.out_dir, predict_mod.PREDICT_OUTPUTS)
    test = predict_mod.load_test(cfg)
    chars = [sum(map(len, p + a + b)) for p, a, b in
             zip(test["prompt"], test["response_a"], test["response_b"])]
    idx = shard(chars, rank, world)
    probs, stats, error, kind = None, {}, None, "?"
    try:
        run_cfg = cfg.replace(devices=str(device),
                              cache_dir=cfg.cache_dir and str(Path(cfg.cache_dir) / f"rank{rank}"))
        predictor, kind = predict_mod.load_model(run_cfg)
        part = test.iloc[idx].reset_index(drop=True)
        probs = predictor.predict_proba(part, tta=predict_mod.tta_for(kind, cfg.tta))
        stats = dict(getattr(predictor, "stats", {}) or {})
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    res = gather(probs, idx, len(test), error, extra=stats)
    if error:
        raise RuntimeError(f"rank {rank}: {error}")
    summary = None
    if res is not None:
        extra = {"kind": kind, "model_dir": str(cfg.model_dir), "tta": cfg.tta, "world_size": world,
                 "total_seconds": time.perf_counter() - t0}
        summary = predict_mod.write_outputs(cfg, test, res[0], merge_stats(res[1]), extra)
    dist.barrier()
    return summary


def train(baseline: str, cfg) -> dict:
    """`train.fit.fit` in DDP: the HF Trainer syncs gradients over the ranks.

    Every scoring of the run (untuned baseline, the eval sample, validation, test) is done
    once, not once per rank: each rank scores its shard of the rows and the ranks exchange
    their parts (`infer.devices.across_ranks`), so every rank holds the same probabilities.
    Rank 0 writes the run folder; the other ranks write theirs under `out_dir/.rank<r>` (their
    copies of the same model, deleted at the end) so that no two processes write one file.
    Resuming from checkpoints is off: the ranks would not agree on where to resume.
    """
    import shutil

    from ..train import fit as fit_mod

    rank, world, device = init()
    if baseline == "xgb":
        raise ValueError("distributed training is for the transformer baselines, not xgb")
    out_dir = cfg.out_dir if rank == 0 else str(Path(cfg.out_dir) / f".rank{rank}")
    cfg = cfg.replace(devices=str(device), out_dir=out_dir)
    if world > 1:
        cfg.resume = False
    result = fit_mod.fit(cfg)
    if world > 1:
        dist.barrier()
        if rank != 0:
            shutil.rmtree(out_dir, ignore_errors=True)
    return result


def cli_main(argv: list[str] | None = None) -> int:
    """`torchrun ... -m lmsys_pref.commands.distributed predict|train ...` (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("predict", "train"):
        print(__doc__)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv[0] == "predict":
            from .predict import parse_args

            predict(parse_args(argv[1:], prog="lmsys_pref.commands.distributed predict"))
        else:
            _train_cli(argv[1:])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _train_cli(argv: list[str]) -> None:
    from ..configs import parse_params
    from .notebooks import BASELINES

    ap = argparse.ArgumentParser(prog="lmsys_pref.commands.distributed train")
    ap.add_argument("baseline", choices=sorted(BASELINES))
    ap.add_argument("--preset")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    args = ap.parse_args(argv)
    spec = BASELINES[args.baseline]
    cfg = spec.config_class().from_preset(args.preset or spec.preset, **parse_params(args.param),
                                          data_dir=args.data_dir, out_dir=args.out_dir)
    train(args.baseline, cfg)


if __name__ == "__main__":
    sys.exit(cli_main())
