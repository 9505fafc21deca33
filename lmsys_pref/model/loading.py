"""A saved model rebuilt for scoring (`load_for_inference`): a LoRA adapter on its base, or a
fully fine-tuned folder (a merged `--into-base` model, quantized as it loads when asked), an
A/B-token judge or a classifier, with the head it was trained with."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from .. import runs
from ..configs.encoder import EncoderConfig
from ..configs.lm import AB_TOKENS, LMConfig
from ..data import DataError
from ..runs import resume
from . import heads, judge, models, precision
from .precision import resolve_dtype


def load_for_inference(model_dir: str | Path, device: str = "cpu", dtype: str | None = None,
                       **overrides):
    """Rebuild a saved model for scoring: `(model, tokenizer, cfg)`, model in eval mode.

    Args:
        model_dir: a run folder or its model/ subfolder.
        device: where the model goes ("cpu", "cuda:0").
        dtype: weights dtype override ('fp32', 'bf16', 'fp16'; None = the saved config's).
        overrides: config fields to change, e.g. `model_id` when the base model lives
            elsewhere (a Kaggle input path) or `quantization`.
    """
    model_dir = runs.resolve_model_dir(model_dir)
    problem = resume.model_files_problem(model_dir)  # one line naming a cut-off file
    if problem:
        raise DataError(problem)
    meta = runs.read_model_meta(model_dir)
    cls = EncoderConfig if meta["kind"] == "encoder" else LMConfig
    saved = dict(meta["config"])
    if "lora_init" in saved and overrides.get("quantization", "none") not in ("", "none"):
        saved["lora_init"] = "default"  # a PiSSA adapter is saved as plain LoRA (see `save`)
    cfg = cls.from_dict(saved).replace(dtype=dtype, **overrides)
    tok_dir = model_dir / models.TOKENIZER_DIR  # runs saved before the tokenizer moved to the root
    tokenizer = models.load_tokenizer(str(tok_dir if tok_dir.is_dir() else model_dir))
    if cfg.lora_r > 0:
        from peft import PeftModel
        base = models.load_base(cfg.model, tokenizer, device)
        # torch_device: peft otherwise stages the adapter on its default device (cuda:0);
        # autocast_adapter_dtype=False: the adapter runs in the body's dtype, not fp32
        model = PeftModel.from_pretrained(base, str(model_dir), torch_device=str(device),
                                          autocast_adapter_dtype=False)
        precision.lora_in_dtype(model, resolve_dtype(cfg.dtype, device))  # 8-bit: see there
    else:
        model = _load_full(model_dir, cfg, device, tokenizer)
    judge.check_saved(model, meta.get(judge.META_KEY), model_dir)
    if cfg.quantization in ("", "none"):  # bitsandbytes layers were placed by device_map
        model.to(device)
    return model.eval(), tokenizer, cfg


def _load_full(model_dir: Path, cfg, device: str, tokenizer):
    """A fully fine-tuned model: its saved config, the configured head, the saved weights."""
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.quantization not in ("", "none"):
        return _load_full_quantized(model_dir, cfg, device, dtype, tokenizer)
    if cfg.head == AB_TOKENS:
        return judge.from_folder(model_dir, tokenizer, cfg.model.n_labels, dtype=dtype).to(device)
    if cfg.head_layers == 1:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=dtype)
        heads.install(model, 1)
        return model.to(device)
    from safetensors.torch import load_file
    conf = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_config(conf).to(dtype)
    heads.install(model, cfg.head_layers)  # in fp32, as it was trained
    missing, unexpected = model.load_state_dict(load_file(str(model_dir / models.FULL_WEIGHTS)),
                                                strict=False)
    if missing or unexpected:
        raise ValueError(f"{model_dir / models.FULL_WEIGHTS}: weights do not fit the model "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device)


def _load_full_quantized(model_dir: Path, cfg, device: str, dtype: torch.dtype, tokenizer):
    """A full-weight folder (a merged `--into-base` 9B) in 4/8-bit: bitsandbytes quantizes the
    body as it loads; the head is installed again and its saved weights loaded in fp32."""
    if not str(device).startswith("cuda"):
        raise ValueError(f"quantization {cfg.quantization!r}: bitsandbytes needs a CUDA device, "
                         f"not {device!r}; score {model_dir} with -p quantization none")
    kwargs = dict(dtype=dtype, quantization_config=models.quant_config(cfg.model, dtype),
                  device_map={"": str(device)})
    if cfg.head == AB_TOKENS:  # an LM quantized whole (bitsandbytes skips its output layer)
        return judge.from_folder(model_dir, tokenizer, cfg.model.n_labels, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **kwargs)
    head = heads.install(model, cfg.head_layers)
    _load_saved_head(head, heads.head_name(model), model_dir / models.FULL_WEIGHTS)
    return model


def _load_saved_head(head, name: str, weights: Path) -> None:
    """Load the `name.*` tensors of a safetensors file into `head` (only they are read)."""
    from safetensors import safe_open
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such file; a quantized full-weight folder needs "
                                "its weights in one model.safetensors")
    with safe_open(str(weights), framework="pt") as f:
        state = {k[len(name) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}
    head.load_state_dict(state)  # strict: a head that does not fit names its tensors
