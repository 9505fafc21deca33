"""What saved weights prove without loading them: a run's saved metadata and weight folders,
tensor shapes from safetensors headers, the sizes an adapter proves about its base, parameter
counts, and whether base weights are the run's base (`base_mismatch`).

The part below the `INLINED` marker uses only the standard library: `layout.inlined_source`
copies it, ahead of layout's own part, into each kernel's install cell, which runs before
lmsys_pref is installed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


# --- INLINED into each kernel's install cell: standard library only ----------------------------
def saved_meta(model_dir):
    """(folder, lmsys_pref.json) of the model saved in `model_dir` or its model/; (None, {})."""
    for folder in (Path(model_dir or "", ""), Path(model_dir or "", "model")):
        if model_dir and (folder / "lmsys_pref.json").is_file():
            return folder, json.loads((folder / "lmsys_pref.json").read_text())
    return None, {}


def model_folders(model_dir):
    """The folders holding the saved weights: the model folder, then its folds (k-fold runs)."""
    folder, meta = saved_meta(model_dir)
    return [] if folder is None else [folder] + [folder / f for f in meta.get("folds", [])]


def safetensors_shapes(path):
    """Tensor name -> shape from a safetensors file's header (an 8-byte little-endian length,
    then JSON); no tensor is read, so a 20 GB file costs a few kilobytes."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


_MLP_IN, _MLP_OUT = ("hidden_size", "intermediate_size"), ("intermediate_size", "hidden_size")
LORA_SIZES = {"q_proj": ("hidden_size", "q_width"), "k_proj": ("hidden_size", "kv_width"),
              "v_proj": ("hidden_size", "kv_width"), "o_proj": ("q_width", "hidden_size"),
              "gate_proj": _MLP_IN, "up_proj": _MLP_IN, "down_proj": _MLP_OUT}
"""LoRA target -> the sizes of its input and output (lora_A is r x in, lora_B is out x r)."""


def adapter_sizes(shapes):
    """What an adapter's tensor shapes prove about its base: hidden_size (the head's input),
    the LoRA targets' sizes (`LORA_SIZES`) and `min_layers` (the deepest adapted layer + 1)."""
    sizes = {}
    for name, shape in shapes.items():
        parts = name.split(".")
        if parts[-2:] == ["score", "weight"] or parts[-3:] == ["score", "0", "weight"]:
            sizes["hidden_size"] = shape[-1]  # 1 layer: (3, hidden); an MLP head: (h/2, hidden)
        if len(parts) < 4 or parts[-2] not in ("lora_A", "lora_B") or "layers" not in parts:
            continue
        layer = parts[parts.index("layers") + 1]
        if layer.isdigit():
            sizes["min_layers"] = max(sizes.get("min_layers", 0), int(layer) + 1)
        if parts[-3] in LORA_SIZES:
            field_in, field_out = LORA_SIZES[parts[-3]]
            if parts[-2] == "lora_A":
                sizes[field_in] = shape[1]
            else:
                sizes[field_out] = shape[0]
    return sizes


def config_sizes(conf):
    """A config.json's sizes in the terms of `adapter_sizes` (a multimodal config's text
    config wins: it holds the decoder)."""
    conf = {**conf, **conf.get("text_config", {})}
    hidden, heads = conf.get("hidden_size"), conf.get("num_attention_heads")
    head_dim = conf.get("head_dim") or (hidden // heads if hidden and heads else None)
    kv_heads = conf.get("num_key_value_heads", heads)
    return {"hidden_size": hidden, "intermediate_size": conf.get("intermediate_size"),
            "q_width": heads * head_dim if heads and head_dim else None,
            "kv_width": kv_heads * head_dim if kv_heads and head_dim else None,
            "min_layers": conf.get("num_hidden_layers")}


def config_params(conf):
    """Parameters of a decoder classifier from its config.json: the embeddings plus, per layer,
    attention (q, k, v, o) and the gated MLP (gate, up, down); norms and the head are left out
    (< 0.1%)."""
    sizes, conf = config_sizes(conf), {**conf, **conf.get("text_config", {})}
    hidden = sizes["hidden_size"]
    layer = hidden * 2 * (sizes["q_width"] + sizes["kv_width"]) \
        + 3 * hidden * sizes["intermediate_size"]
    return conf["vocab_size"] * hidden + sizes["min_layers"] * layer


def full_params(model_dir):
    """Parameters of the full-weight model saved in `model_dir`: counted from the safetensors
    headers of its weights folder (itself, or a k-fold run's last fold), else estimated from
    its config.json; 0 when neither is there."""
    for folder in model_folders(model_dir)[-1:]:
        shapes = [s for f in sorted(folder.glob("*.safetensors"))
                  for s in safetensors_shapes(f).values()]
        if shapes:
            return sum(math.prod(shape) for shape in shapes)
        if (folder / "config.json").is_file():
            return config_params(json.loads((folder / "config.json").read_text()))
    return 0


def base_mismatch(model_dir, base_dir):
    """How the base weights in `base_dir` differ from the base the run in `model_dir` was
    trained on ('' when they do not): its recorded `base` sizes against their config.json, else
    what its adapter's tensor shapes prove (a run saved before the sizes were recorded).

    Raises:
        ValueError: `base_dir` has no config.json, or the run shows neither.
    """
    if not (Path(base_dir) / "config.json").is_file():
        raise ValueError(f"{base_dir} holds no config.json, so it is no base model")
    conf = json.loads((Path(base_dir) / "config.json").read_text())
    metas = [saved_meta(f)[1] for f in model_folders(model_dir)]
    recorded = next((m["base"] for m in metas if m.get("base")), None)
    if recorded:
        flat = {**conf, **conf.get("text_config", {})}
        diff = [(k, flat[k], v) for k, v in recorded.items() if k in flat and flat[k] != v]
    else:
        proof = next((adapter_sizes(safetensors_shapes(f / "adapter_model.safetensors"))
                      for f in model_folders(model_dir)
                      if (f / "adapter_model.safetensors").is_file()), None)
        if proof is None:
            raise ValueError(f"{model_dir} records no base sizes and has no adapter_model."
                             "safetensors, so the base it needs cannot be checked")
        have = config_sizes(conf)
        diff = [(k, have[k], v) for k, v in proof.items() if have.get(k) is not None
                and (have[k] < v if k == "min_layers" else have[k] != v)]
    return "; ".join(f"{k} {there}, the run's {want}" for k, there, want in diff)
