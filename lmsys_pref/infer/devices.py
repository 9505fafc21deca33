"""Which devices a run scores on, one model replica per device, and rows scored once across
the ranks of a DDP run."""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch


def parse_devices(devices: str | Sequence | None = "auto") -> list[torch.device]:
    """A device list from the `devices` setting.

    Args:
        devices: "auto" (or None/""): every visible GPU, else the CPU; a comma-separated
            string such as "cuda:0,cuda:1" or "cpu,cpu" (two CPU workers); or a list.

    Raises:
        ValueError: an unknown device name or a GPU that is not visible.
    """
    if devices is None or (isinstance(devices, str) and devices.strip() in ("", "auto")):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.device(f"cuda:{i}") for i in range(n)] or [torch.device("cpu")]
    items = devices.split(",") if isinstance(devices, str) else list(devices)
    out = []
    for item in items:
        try:
            dev = torch.device(item.strip() if isinstance(item, str) else item)
        except RuntimeError as err:
            raise ValueError(f"devices: unknown device {item!r} ({err})") from None
        if dev.type == "cuda":
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = 0 if dev.index is None else dev.index
            if index >= visible:
                raise ValueError(f"devices: {item!r} is not visible ({visible} GPU(s) here); "
                                 "use 'auto' or 'cpu'")
            dev = torch.device("cuda", index)
        out.append(dev)
    if not out:
        raise ValueError(f"devices: empty device list {devices!r}")
    return out


def model_device(model) -> torch.device:
    """The device of a module's first parameter (CPU for parameter-free callables)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def replicate(model, devices: Sequence[torch.device]) -> list:
    """One replica per entry of `devices`.

    `model` may already be a list (one per device, as `load_predictor` builds them by loading
    each device's copy from disk). Entries naming the same device share one module: forward
    passes keep no state, and a second copy of the weights would only cost memory. A module on
    another device is deep-copied and moved (a quantized model should be loaded per device
    instead).
    """
    if isinstance(model, (list, tuple)):
        if len(model) != len(devices):
            raise ValueError(f"{len(model)} model replicas for {len(devices)} devices")
        return list(model)
    by_device, out = {model_device(model): model}, []
    for dev in devices:
        if dev not in by_device and getattr(model, "is_quantized", False):
            raise ValueError(f"a quantized model cannot be copied to {dev}: load one replica per "
                             "device from its saved folder (predict.load_predictor does)")
        if dev not in by_device:
            by_device[dev] = copy.deepcopy(model).to(dev)
        out.append(by_device[dev])
    for m in out:
        if hasattr(m, "eval"):
            m.eval()
    return out


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process in torch.distributed; (0, 1) outside a group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(lengths, rank: int, world: int) -> np.ndarray:
    """This rank's row positions: every `world`-th row of the longest-first order, so each rank
    gets the same mix of long and short rows (and finishes at about the same time)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return np.sort(order[rank::world])


def across_ranks(score: Callable[[np.ndarray], np.ndarray], lengths) -> np.ndarray:
    """Rows scored once across the process group, every rank getting all of them back.

    In a DDP run (torchrun) each rank scores its `shard` of the rows (`score(positions)` ->
    probabilities of those rows) and all ranks exchange their parts, so every rank holds the
    same (n, k) result in input order. Outside a group `score` gets every row. Every rank must
    call it (as every rank runs the same training code); a failure on any rank is raised on
    all of them, naming the rank.
    """
    import torch.distributed as dist

    rank, world = process_group()
    if world == 1:
        return score(np.arange(len(lengths)))
    index, part, error = shard(lengths, rank, world), None, None
    try:
        part = score(index) if len(index) else None
    except Exception as err:  # reported to every rank through the exchange
        error = f"{type(err).__name__}: {err}"
    parts = [None] * world
    dist.all_gather_object(parts, (index, part, error))
    errors = [f"rank {r}: {e}" for r, (_, _, e) in enumerate(parts) if e]
    if errors:
        raise RuntimeError("scoring across ranks failed: " + "; ".join(errors))
    width = next(p.shape[1] for _, p, _ in parts if p is not None)
    out = np.full((len(lengths), width), np.nan)
    for idx, p, _ in parts:
        if p is not None:
            out[idx] = p
    return out


def release(model) -> None:
    """Free the memory of a model that will not run again: its parameters and buffers are
    dropped in place (a quantized model cannot be moved off its GPU), then the CUDA cache is
    emptied. Read anything needed from the model (`describe`) before."""
    import gc

    for module in model.modules():
        module._parameters.clear()
        module._buffers.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
