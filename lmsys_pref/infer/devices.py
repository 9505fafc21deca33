"""Which devices a run scores on, and one model replica per device."""
from __future__ import annotations

import copy
from typing import Sequence

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
