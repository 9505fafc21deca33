"""Scoring heads: the model's own linear layer, or the poster's "three scoring layers".

A sequence classifier ends in one linear layer that maps a hidden state to the 3 labels
(`score` in decoders, `classifier` or `classifier.out_proj` in encoders). `install` replaces that
layer with a small MLP when more layers are asked for; either way the head is trained in full and
saved next to the adapter (peft `modules_to_save`).

The head's weights are fp32, in training (the optimizer steps them) and when a saved model is
scored, while the body runs in bf16 or fp16 and scoring runs without autocast: so every head
casts its input to its own dtype and returns fp32 logits. A 1-layer head is a `CastingLinear`,
state-dict compatible with `nn.Linear`, so a saved adapter still loads with plain transformers
+ peft.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

HEAD_NAMES = ("score", "classifier")  # the classification head of HF decoder / encoder models


class CastingLinear(nn.Linear):
    """An `nn.Linear` that accepts hidden states of any float dtype (same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype)).float()


class ScoreHead(nn.Sequential):
    """`n_layers` linear layers (hidden -> hidden/2 -> hidden/4 -> labels) with GELU between;
    the input is cast to the head's dtype, the logits come out in fp32."""

    def __init__(self, hidden: int, n_labels: int = 3, n_layers: int = 3, dropout: float = 0.1):
        sizes = [hidden] + [max(hidden // 2 ** (k + 1), n_labels) for k in range(n_layers - 1)]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], n_labels))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self[0].weight.dtype)).float()


def _casting(layer: nn.Linear) -> CastingLinear:
    """`layer` as a `CastingLinear` sharing its parameters (device and dtype unchanged)."""
    if isinstance(layer, CastingLinear):
        return layer
    new = CastingLinear.__new__(CastingLinear)
    nn.Module.__init__(new)
    new.in_features, new.out_features = layer.in_features, layer.out_features
    new.weight, new.bias = layer.weight, layer.bias
    return new


def head_name(model) -> str:
    """The attribute holding the classification head (`score` or `classifier`)."""
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ValueError(f"{type(model).__name__}: no classification head named {HEAD_NAMES}")


def _final_linear(model) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute, layer) of the linear layer that outputs the labels."""
    name = head_name(model)
    head = getattr(model, name)
    if isinstance(head, nn.Linear):
        return model, name, head
    out = getattr(head, "out_proj", None)  # RoBERTa's head: dense -> tanh -> out_proj
    if isinstance(out, nn.Linear):
        return head, "out_proj", out
    raise ValueError(f"{type(model).__name__}.{name}: cannot find its final linear layer")


# Output-layer weights ~ N(0, (HEAD_INIT_GAIN / sqrt(fan_in))^2): the untuned logits then have
# a spread of HEAD_INIT_GAIN x the RMS of the incoming hidden state (about 4.4 on Gemma 3 270M,
# so ~0.05 and an untuned log loss ~0.002 above ln 3), yet every weight is non-zero, so the body
# and the LoRA adapter get gradients from the first step. (A zeroed layer passed none: with
# LoRA's B also zero the adapter sat at a saddle until the head had grown; the model's own init,
# std 0.02, gave logits of spread ~2 and an untuned log loss ~1.19 on Gemma 3 270M.) Adam's
# update size does not depend on the gradient's scale, so small weights barely slow learning:
# on the planted task (BENCHMARKS.md) MiniLM at lr 1e-4 reached 0.900 with gain 0.01 and 0.988
# with 0.4; at the learning rates the small presets use both learn it.
HEAD_INIT_GAIN = 0.01
# An untuned model's log loss stays within this of ln 3 (what any check of a fresh head asserts).
UNTUNED_TOL = 0.02


def init_output(layer: nn.Linear) -> None:
    """Small random output weights scaled to the layer's input size, zero bias (see
    HEAD_INIT_GAIN): an untuned head predicts close to 1/3 each, and passes gradients."""
    with torch.no_grad():
        layer.weight.normal_(0.0, HEAD_INIT_GAIN / layer.in_features ** 0.5)
        if layer.bias is not None:
            layer.bias.zero_()


def output_layer(model) -> nn.Linear | None:
    """The trainable linear layer that outputs the labels (in a peft model, its trained copy
    in `modules_to_save`); None where no such layer exists (a judge scores with its LM head)."""
    n_labels, found = model.config.num_labels, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == n_labels and \
                module.weight.requires_grad and set(name.split(".")) & set(HEAD_NAMES):
            found = module  # the last one: a deeper head's final layer
    return found


def zero_output(layer: nn.Linear) -> None:
    """All logits zero: the head predicts exactly 1 / n_labels for every class."""
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


def install(model, n_layers: int = 1, seed: int | None = None) -> nn.Module:
    """Give `model` a head of `n_layers` layers in place of its final linear layer.

    Args:
        model: an `AutoModelForSequenceClassification` model.
        n_layers: 1 keeps the model's own layer (re-initialised by `init_output` when `seed`
            is given), more installs a `ScoreHead` (its last layer initialised the same way).
        seed: seeds the new weights so that a rebuilt model gets the same head; None keeps
            the weights as they are (a saved head is about to be loaded over them).

    Returns:
        The head module (what `modules_to_save` must name).
    """
    if n_layers < 1:
        raise ValueError(f"head_layers must be >= 1, got {n_layers}")
    parent, attr, layer = _final_linear(model)
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        if n_layers == 1:
            if seed is not None:
                init_output(layer)
            setattr(parent, attr, _casting(layer).float())
        else:
            new = ScoreHead(layer.in_features, layer.out_features, n_layers)
            init_output(new[-1])
            setattr(parent, attr, new.to(layer.weight.device, torch.float32))
    finally:
        torch.random.set_rng_state(gen_state)
    if parent is not model and isinstance(getattr(parent, "dense", None), nn.Linear):
        parent.dense = _casting(parent.dense).float()  # an encoder head's first layer
    return getattr(model, head_name(model))


def to_probs(logits, objective: str = "ce") -> np.ndarray:
    """Class probabilities from raw head outputs (torch tensor or numpy array).

    "ce": softmax. "mse" (regression on one-hot targets): clip to [1e-3, 1], renormalise.
    """
    z = logits.detach().float().cpu().numpy() if isinstance(logits, torch.Tensor) \
        else np.asarray(logits, dtype=np.float64)
    z = z.astype(np.float64)
    if objective == "ce":
        z = np.exp(z - z.max(axis=1, keepdims=True))
    elif objective == "mse":
        z = np.clip(z, 1e-3, 1.0)
    else:
        raise ValueError(f"objective: unknown {objective!r}; expected 'ce' or 'mse'")
    return z / z.sum(axis=1, keepdims=True)
