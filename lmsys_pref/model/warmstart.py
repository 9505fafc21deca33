"""A new run that starts from a trained one (`-p init_from RUN`): its adapter (or, for a full
fine-tune, its weights) and its scoring head, the head's rows of the classes the new task has.

The WSDM Cup's 2nd place started its two-class models from its LMSYS 2024 ones: the head's
`a` and `b` rows kept, the `tie` row dropped (a three-class run -> a two-class task). The base
must be the same model and the adapter the same shape (rank, targets, layers); every mismatch is
a named error before training starts.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import runs
from ..configs.parts import ModelSpec
from ..data import DataError
from ..runs import resume
from . import heads, importer, judge, models


def source_folder(init_from: str | Path) -> Path:
    """The single model folder a run starts from (a run folder's model/, a merged folder or a
    fold's folder); a k-fold run's model/ holds several and is refused."""
    folder = runs.resolve_model_dir(init_from)
    if runs.read_model_meta(folder).get("folds"):
        raise DataError(f"init_from {init_from}: a k-fold run holds one model per fold; start "
                        f"from one of them ({folder}/fold_0) or from `lmsys-pref merge-folds`")
    problem = resume.model_files_problem(folder)
    if problem:
        raise DataError(f"init_from: {problem}")
    return folder


def _source_tensors(folder: Path, lora: bool) -> dict[str, torch.Tensor]:
    """The saved adapter's tensors (peft's names, no adapter name), or the full weights."""
    if lora:
        return importer.read_adapter(folder)[1]
    return importer.load_tensors(folder / models.FULL_WEIGHTS)


def fit_head_rows(source: torch.Tensor, target: torch.Tensor, key: str, where: Path
                  ) -> torch.Tensor:
    """`source` shaped as `target`: the same, or an output layer's first rows (a, b of a, b,
    tie: the tie row dropped)."""
    if source.shape == target.shape:
        return source
    if source.shape[1:] == target.shape[1:] and source.shape[0] > target.shape[0]:
        return source[: target.shape[0]]
    raise DataError(f"init_from {where}: {key} is {tuple(source.shape)}, this run's "
                    f"{tuple(target.shape)} (another base, adapter rank or head)")


def start_from(model, spec: ModelSpec, init_from: str | Path) -> dict:
    """Load `init_from`'s adapter (or weights) and head into the freshly built `model`.

    Args:
        model: the run's model from `models.build` (a PeftModel, or a plain one for lora_r 0).
        spec: the run's model part (`cfg.model`).
        init_from: the run or model folder to start from.

    Returns:
        What was loaded, for metrics.json: the folder, tensors loaded, head rows kept.

    Raises:
        DataError: another base model, a k-fold source, or tensors that do not fit.
    """
    folder = source_folder(init_from)
    saved = runs.read_model_meta(folder)["config"]
    if saved.get("model_id") != spec.model_id or saved.get("random_init", {}) != spec.random_init:
        raise DataError(f"init_from {folder}: trained on {saved.get('model_id')!r}, this run's "
                        f"base is {spec.model_id!r}; a run starts only from one of its own base")
    if saved.get("head", "classifier") != spec.head:  # runs saved before `head` classified
        raise DataError(f"init_from {folder}: a head {saved.get('head', 'classifier')!r} run, "
                        f"this run's head is {spec.head!r}; start from a run of the same head")
    lora = spec.lora_r > 0
    source = _source_tensors(folder, lora)
    if lora:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        target = get_peft_model_state_dict(model)
    else:
        target = model.state_dict()
    missing = sorted(set(target) - set(source))
    if missing:
        raise DataError(f"init_from {folder}: no {missing[0]} ({len(missing)} tensor(s) of this "
                        "run missing: another adapter shape or head)")
    state = {k: fit_head_rows(source[k], v, k, folder).to(v.dtype) for k, v in target.items()}
    if lora:
        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state)
    head = None if judge.is_judge(model) else heads.head_name(
        model.get_base_model() if lora else model)  # a judge scores with its answer tokens
    return {"init_from": str(folder), "tensors": len(state),
            "head_rows": spec.n_labels, "head": head}
