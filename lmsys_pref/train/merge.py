"""`lmsys-pref merge-folds MODEL_DIR OUT_DIR`: one model folder from a k-fold run's folds, so
`predict` loads and scores one model instead of k (the 1st place's way to fit 5 folds of a 9B
into Kaggle's 9 hours).

Modes (`--mode`):

- `mean` (default): every tensor of the fold adapters averaged, LoRA A and B and the head, as the
  1st place's `merge_lora.py` (shyoulala/LMSYS_BlackPearl) did. mean(B)·mean(A) is not the mean
  of the folds' weight changes B·A, but it is close when the folds start from one initialisation,
  as ours do (every fold builds its adapter from the run's seed).
- `exact`: the folds' weight changes averaged exactly, ΔW = mean_k(s_k·B_k·A_k): the k adapters
  side by side in one adapter of rank Σr_k (A stacked along the rank, each B scaled by s_k / k,
  the new scale 1), what peft's `add_weighted_adapter(combination_type="cat")` builds, done here
  on the files (no base model loaded). The heads are averaged.

`--into-base` then adds the merged adapter into the base weights (peft's `merge_and_unload`, in
fp32 on the CPU) and writes a full model (config.json + model.safetensors) in the base
checkpoint's own dtype (bf16 for Gemma-2: 18.5 GB for the 9B, not 37 GB in fp32; `--dtype`
overrides it): no adapter at scoring time, but a folder the size of the base, which the T4
kernels score in 8-bit (`-p quantization`, from 7B parameters by default). Folds of a full
fine-tune (an encoder run, `lora_r` 0) are averaged weight by weight, which is also the exact
mean of their changes.
The output holds no held_out.json: the merged model has seen every labelled row.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from .. import runs
from ..configs.lm import LMConfig
from ..configs.parts import ModelSpec
from ..files import atomic
from ..files.tables import DataError
from ..model import heads, importer, judge, loading, model_card, models
from ..model.precision import resolve_dtype
from ..runs import postrules, resume

log = logging.getLogger("lmsys_pref.train.merge")
MODES = ("mean", "exact")
WEIGHT_FILES = (*importer.ADAPTER_WEIGHTS, models.FULL_WEIGHTS)
NOT_COPIED = {*WEIGHT_FILES, runs.MODEL_META, "README.md"}
CHECKPOINT_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
"""A checkpoint's config.json `dtype` -> our name for it."""


def fold_dirs(model_dir: str | Path) -> tuple[Path, list[Path]]:
    """(the run's model/ folder, its fold folders as lmsys_pref.json lists them)."""
    model_dir = runs.resolve_model_dir(model_dir)
    names = runs.read_model_meta(model_dir).get("folds")
    if not names:
        raise ValueError(f"{model_dir}: not a k-fold run (no 'folds' in {runs.MODEL_META}); "
                         "nothing to merge")
    folds = [model_dir / n for n in names]
    missing = [str(f) for f in folds if not (f / runs.MODEL_META).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir}: fold folder(s) {missing} are missing")
    for fold in folds:  # a cut weights or config file: one line naming it, before any loading
        problem = resume.model_files_problem(fold)
        if problem:
            raise DataError(problem)
    return model_dir, folds


def check_same(states: list[dict[str, torch.Tensor]], names: list[str],
               shapes: bool = True) -> None:
    """Raise naming the first fold whose tensor names (or shapes) differ from the first's."""
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        if set(state) != set(first):
            diff = sorted(set(state) ^ set(first))[:3]
            raise ValueError(f"{name}: its tensors differ from {names[0]}'s ({diff}); "
                             "the folds of one run have the same")
        bad = [k for k in first if shapes and state[k].shape != first[k].shape]
        if bad:
            raise ValueError(f"{name}: {bad[0]} is {tuple(state[bad[0]].shape)}, "
                             f"{tuple(first[bad[0]].shape)} in {names[0]}; use --mode exact")


def mean_tensors(states: list[dict[str, torch.Tensor]], names: list[str]
                 ) -> dict[str, torch.Tensor]:
    """Every tensor averaged over the folds (in fp32, stored back in its own dtype)."""
    check_same(states, names)
    first = states[0]
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(first[k].dtype)
            for k in first}


def _scale(config: dict) -> float:
    r = config["r"]
    return config["lora_alpha"] / (r ** 0.5 if config.get("use_rslora") else r)


def _b_key(a_key: str) -> str:
    """The B tensor paired with a LoRA A tensor."""
    if a_key.endswith("lora_embedding_A"):
        return a_key[:-1] + "B"
    return a_key[:-len(".lora_A.weight")] + ".lora_B.weight"


def concat_lora(configs: list[dict], states: list[dict[str, torch.Tensor]], names: list[str]
                ) -> tuple[dict, dict[str, torch.Tensor]]:
    """One adapter whose change is exactly the mean of the folds' changes (see the module doc).

    Returns:
        (its adapter_config.json, its tensors); the tensors that are no LoRA pair (the head,
        other `modules_to_save`) are averaged.
    """
    for config, name in zip(configs, names):
        odd = [k for k in ("use_dora", "lora_bias", "rank_pattern", "alpha_pattern")
               if config.get(k)]
        if odd:
            raise ValueError(f"{name}: adapter_config.json sets {odd}; --mode exact takes plain "
                             "LoRA adapters (use --mode mean)")
    check_same(states, names, shapes=False)  # ranks may differ: the rank dims are joined
    k = len(states)
    pairs = [(a, _b_key(a)) for a in states[0]
             if a.endswith(".lora_A.weight") or a.endswith(".lora_embedding_A")]
    merged = {}
    for a_key, b_key in pairs:
        merged[a_key] = torch.cat([s[a_key].float() for s in states], dim=0)
        merged[b_key] = torch.cat([s[b_key].float() * _scale(c) / k
                                   for s, c in zip(states, configs)], dim=1)
    paired = {key for pair in pairs for key in pair}
    rest = mean_tensors([{n: v for n, v in s.items() if n not in paired} for s in states], names)
    rank = sum(c["r"] for c in configs)
    config = {**configs[0], "r": rank, "lora_alpha": rank, "use_rslora": False}
    return config, {**merged, **rest}


def merged_adapter(folds: list[Path], mode: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors) of the folds' adapters merged by `mode`."""
    read = [importer.read_adapter(f) for f in folds]
    configs, states = [c for c, _ in read], [s for _, s in read]
    names = [str(f) for f in folds]
    if mode == "exact":
        return concat_lora(configs, states, names)
    ranks = {c["r"] for c in configs}
    if len(ranks) > 1:
        raise ValueError(f"{folds[0].parent}: the folds' LoRA ranks differ ({sorted(ranks)}); "
                         "use --mode exact")
    return configs[0], mean_tensors(states, names)


def _full_weights(folds: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    missing = [str(f / models.FULL_WEIGHTS) for f in folds if not (f / models.FULL_WEIGHTS)
               .is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such file (sharded or missing weights)")
    return mean_tensors([load_file(str(f / models.FULL_WEIGHTS)) for f in folds],
                        [str(f) for f in folds])


def _check_out(model_dir: Path, out_dir: Path) -> None:
    """OUT_DIR is replaced once complete: never the run being merged or a folder inside it."""
    out, src = out_dir.resolve(), model_dir.resolve()
    if out == src or out in src.parents or src in out.parents:
        raise ValueError(f"{out_dir}: OUT_DIR must lie outside {model_dir} and its run folder")


def _copy_fold_files(fold: Path, dest: Path) -> None:
    """The tokenizer and other files of a fold folder, not its weights or metadata."""
    for path in fold.iterdir():
        if path.is_file() and path.name not in NOT_COPIED:
            shutil.copy2(path, dest / path.name)


def base_dtype(spec: ModelSpec) -> str:
    """The dtype the base checkpoint of `spec` (`cfg.model`) is stored in (`dtype`, before
    transformers 5 `torch_dtype`, in its config.json); bf16 when it names none or the base is
    random (a CPU merge would otherwise write fp32, twice the size)."""
    if spec.random_init:
        return "bf16"
    from transformers import AutoConfig
    path, gguf = models.resolve(spec.model_id, spec.gguf_file)
    conf = AutoConfig.from_pretrained(path, **({"gguf_file": gguf} if gguf else {})).to_dict()
    stored = str(conf.get("dtype") or conf.get("torch_dtype") or "").replace("torch.", "")
    return CHECKPOINT_DTYPES.get(stored, "bf16")


def _cast_body(model: torch.nn.Module, dtype: str) -> None:
    """Every weight outside the head to `dtype` (the head stays fp32, as it was trained; an
    A/B-token judge, a causal LM, has none)."""
    head = tuple(f"{name}." for name in heads.HEAD_NAMES)
    target = resolve_dtype(dtype)
    for name, param in model.named_parameters():
        if not name.startswith(head) and param.is_floating_point():
            param.data = param.data.to(target)


def merge_into_base(model_dir: Path, dtype: str | None = None) -> None:
    """Replace the adapter in `model_dir` by the base weights with the adapter added in, stored
    in `dtype` (None: the base checkpoint's own, `base_dtype`); the sum is taken in fp32."""
    model, tokenizer, cfg = loading.load_for_inference(model_dir, "cpu", dtype="fp32",
                                                      quantization="none")
    full = model.merge_and_unload()
    _cast_body(full, dtype or base_dtype(cfg.model))
    meta = runs.read_model_meta(model_dir)
    for name in importer.ADAPTER_WEIGHTS + (importer.ADAPTER_CONFIG,):
        (model_dir / name).unlink(missing_ok=True)
    cfg = cfg.replace(lora_r=0, dtype=dtype or meta["config"].get("dtype"))
    models.save(full, tokenizer, cfg, model_dir)
    runs.write_model_meta(model_dir, cfg.kind, cfg.to_dict(), base=models.base_facts(full),
                          merged={**meta["merged"], "into_base": True},
                          **{k: meta[k] for k in (judge.META_KEY,) if k in meta})


def write_merged(folds: list[Path], dest: Path, mode: str) -> dict | None:
    """The merged weights, the adapter config and the first fold's tokenizer files in `dest`;
    returns the adapter config (None for folds of full weights)."""
    from safetensors.torch import save_file
    adapter = (folds[0] / importer.ADAPTER_CONFIG).is_file()
    config, tensors = merged_adapter(folds, mode) if adapter else (None, _full_weights(folds))
    _copy_fold_files(folds[0], dest)
    if config is not None:
        runs.save_json(dest / importer.ADAPTER_CONFIG, config)
    name = importer.ADAPTER_WEIGHTS[0] if adapter else models.FULL_WEIGHTS
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / name),
              metadata={"format": "pt"})
    return config


def merge_folds(model_dir: str | Path, out_dir: str | Path, mode: str = "mean",
                into_base: bool = False, dtype: str | None = None) -> Path:
    """Write `out_dir`: one model folder from the folds of a k-fold run (see the module doc).

    Args:
        model_dir: a k-fold run folder or its model/ folder.
        out_dir: the model folder to write (replaced only once complete).
        mode: 'mean' (the fold tensors averaged) or 'exact' (the mean of the folds' changes).
        into_base: add the merged adapter into the base weights (a full model folder).
        dtype: weights dtype of an `into_base` folder (None = the base checkpoint's own).

    Returns:
        `out_dir`, which `predict`, `bias` and the kernels load as one model.
    """
    if mode not in MODES:
        raise ValueError(f"mode: unknown {mode!r}; expected one of {MODES}")
    model_dir, folds = fold_dirs(model_dir)
    _check_out(model_dir, Path(out_dir))
    meta = runs.read_model_meta(folds[0])
    with atomic.atomic_dir(out_dir) as tmp:
        config = write_merged(folds, tmp, mode)
        if (model_dir / postrules.FILENAME).is_file():
            shutil.copy2(model_dir / postrules.FILENAME, tmp / postrules.FILENAME)
        saved = dict(meta["config"])
        if config is not None:  # the config says what the adapter holds (exact: rank k x r)
            saved.update(lora_r=config["r"], lora_alpha=float(config["lora_alpha"]))
        merged = {"from": str(model_dir), "folds": [f.name for f in folds], "mode": mode}
        runs.write_model_meta(tmp, meta["kind"], saved, merged=merged, **_carried(meta))
        if into_base and config is not None:
            merge_into_base(tmp, dtype)
        _write_readme(tmp)
    log.info("merge-folds: %d folds of %s (%s%s) -> %s", len(folds), model_dir, mode,
             ", into the base" if into_base else "", out_dir)
    return Path(out_dir)


def _carried(meta: dict) -> dict:
    """What a merged folder's lmsys_pref.json keeps of the folds': the base's facts and an
    A/B-token judge's answer tokens."""
    return {k: meta[k] for k in ("base", judge.META_KEY) if k in meta}


def _write_readme(model_dir: Path) -> None:
    """The model card, plus where the merged model comes from."""
    from ..configs.encoder import EncoderConfig
    meta = runs.read_model_meta(model_dir)
    cls = EncoderConfig if meta["kind"] == "encoder" else LMConfig
    m = meta["merged"]
    (model_dir / "README.md").write_text(
        model_card.readme(cls.from_dict(meta["config"]).model, meta.get(judge.META_KEY)) +
        f"\nMerged by `lmsys-pref merge-folds` from the folds {', '.join(m['folds'])} of "
        f"{m['from']} (mode {m['mode']}{', into the base weights' if m.get('into_base') else ''}"
        ").\n")


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of `lmsys-pref merge-folds MODEL_DIR OUT_DIR [--mode ...] [--into-base]`."""
    ap = argparse.ArgumentParser(prog="lmsys-pref merge-folds", description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", help="a k-fold run folder or its model/")
    ap.add_argument("out_dir", help="the merged model folder to write")
    ap.add_argument("--mode", choices=MODES, default="mean",
                    help="mean: the fold tensors averaged (1st place); exact: the mean of the "
                         "folds' weight changes, as one adapter of rank k x r")
    ap.add_argument("--into-base", action="store_true",
                    help="add the merged adapter into the base weights (a full model folder)")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                    help="weights dtype of an --into-base folder (default: the base "
                         "checkpoint's own, bf16 for Gemma-2; fp32 doubles the size)")
    args = ap.parse_args(argv)
    out = merge_folds(args.model_dir, args.out_dir, args.mode, args.into_base, args.dtype)
    print(f"{args.model_dir}: {len(fold_dirs(args.model_dir)[1])} folds merged ({args.mode}) "
          f"-> {out}")
    return 0
