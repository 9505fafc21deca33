"""Keep the best checkpoint (`keep_best`): the Trainer evaluates rows held out of the fit every
`eval_steps`, ends on the checkpoint with the lowest loss there (`load_best_model_at_end`) and,
with `early_stopping_patience`, stops after that many evaluations without improvement.

The rows that choose the checkpoint are a stratified, prompt-grouped `STOP_FRAC` of the
*training* rows, held out of the fit, as XGBoost's early-stopping rows are: the holdout or the
fold's held-out rows that metrics.json scores never choose their own checkpoint, so its figures
stay honest. Small presets on a CPU gain most: at a learning rate that learns a strong signal
fast, a short run on real rows can drift above its untuned start, and the best checkpoint does
not.

The start is a candidate too (`StartPoint`): the Trainer saves no checkpoint at step 0, so its
trainable weights are kept in memory and its loss on the same rows measured before training;
when no checkpoint beats it, the run ends at its start (base + fresh head, or its `init_from`
warm start) and says so, instead of ending worse than it began. A uniform head (the output
layer zeroed: 1 / n for each class, the "no model" floor) is the last candidate: a run whose
checkpoints and start all score worse than that on the choosing rows ends predicting it.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import torch
from transformers import EarlyStoppingCallback

from ..data import splits
from ..model import heads, prompt

STOP_FRAC = 0.15  # share of the training rows that choose the checkpoint (XGBoost's too)
# Fewer rows than this make the choice noise (a log loss over n rows has a standard error of
# about 0.5 / sqrt(n)) and cost the fit rows it needs: measured, MiniLM's planted run with 62 of
# its 410 rows choosing ended at 0.519 unseen accuracy (0.975 without), the demo's LMs with 8 of
# 64 went back to their start. Below it a keep_best run trains on all its rows, as without.
MIN_STOP_ROWS = 100
log = logging.getLogger("lmsys_pref.train.best")


def split_stop_rows(train_df: pd.DataFrame, cfg) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(rows to fit, rows that choose the checkpoint); extra rows (no `label` of their own
    split) and soft rows may land on either side, every prompt on one side only. (all rows,
    None) when fewer than `MIN_STOP_ROWS` would choose, which the log says."""
    fit_pos, stop_pos = splits.holdout(splits.strata(train_df), STOP_FRAC, cfg.seed,
                                       groups=splits.fold_groups(train_df, cfg.group_by))
    if len(stop_pos) < MIN_STOP_ROWS:
        log.warning("keep_best: only %d of the %d training rows would choose the checkpoint "
                    "(%d needed for a choice that is not noise): this run fits all of them and "
                    "ends on its last step", len(stop_pos), len(train_df), MIN_STOP_ROWS)
        return train_df, None
    return train_df.iloc[fit_pos], train_df.iloc[stop_pos]


def training_arguments(cfg) -> dict:
    """The `TrainingArguments` of a keep-best run: evaluate and save every `eval_steps`, end on
    the lowest evaluation loss (cross-entropy: the log loss of those rows)."""
    return {"eval_strategy": "steps", "eval_steps": cfg.eval_steps,
            "save_steps": cfg.eval_steps, "load_best_model_at_end": True,
            "metric_for_best_model": "eval_loss", "greater_is_better": False,
            "save_total_limit": 2}


def eval_dataset(stop_df: pd.DataFrame, tokenizer, cfg, dataset_class):
    """The rows that choose the checkpoint, with their hard labels (the model's own loss)."""
    labels = np.asarray(stop_df["label"], dtype=int)
    return dataset_class(prompt.encode(stop_df, tokenizer, cfg.prompt), labels, cfg.objective)


def callbacks(cfg) -> list:
    """Early stopping when asked (`early_stopping_patience` > 0)."""
    if cfg.early_stopping_patience <= 0:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)]


@dataclasses.dataclass
class StartPoint:
    """The untrained model as a keep-best candidate: its loss on the rows that choose the
    checkpoint and a copy of its trainable weights (LoRA and head: small; a fully fine-tuned
    encoder's whole body)."""

    eval_loss: float
    weights: dict[str, torch.Tensor]

    @classmethod
    def measure(cls, trainer, model) -> StartPoint:
        """Before `trainer.train()`: the start's loss (`trainer.evaluate`) and weights."""
        loss = float(trainer.evaluate()["eval_loss"])
        weights = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                   if p.requires_grad}
        return cls(loss, weights)

    def restore(self, model) -> None:
        """Put the start's trainable weights back."""
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.weights:
                    param.copy_(self.weights[name].to(param.device, param.dtype))

    def keep_if_better(self, trainer, model, best_loss: float | None,
                       best_step: int | None) -> dict:
        """After training (the best checkpoint loaded): end on the best of that checkpoint, the
        start and a uniform head; the history entry saying which (`ends_at`)."""
        entry = {"best_step": best_step, "best_eval_loss": best_loss,
                 "start_eval_loss": self.eval_loss, "ends_at": "checkpoint"}
        if best_loss is None or best_loss > self.eval_loss:
            self.restore(model)
            entry.update(best_step=0, best_eval_loss=self.eval_loss, ends_at="start")
            log.warning("keep_best: no checkpoint beat the start on the rows that choose it "
                        "(start %.4f, best checkpoint %s at step %s): the run ends at its start",
                        self.eval_loss, "none" if best_loss is None else f"{best_loss:.4f}",
                        best_step)
        uniform = uniform_loss(trainer, model)
        if uniform is not None and uniform < entry["best_eval_loss"]:
            self.restore(model)  # an adapter that changes nothing, beside the zeroed head
            heads.zero_output(heads.output_layer(model))
            entry.update(best_step=0, best_eval_loss=uniform, ends_at="uniform")
            log.warning("keep_best: neither a checkpoint nor the start beat a uniform head on "
                        "the rows that choose it (%.4f): the run ends predicting 1 / %d for "
                        "each class; it learned nothing these rows confirm", uniform,
                        model.config.num_labels)
        return {**entry, "uniform_eval_loss": uniform}


def uniform_loss(trainer, model) -> float | None:
    """The loss on the choosing rows with the output layer zeroed (every class 1 / n), the
    layer then put back; None for a model without one (a judge). A fresh head's small random
    weights give a start slightly worse than uniform on rows it has no signal for (Gemma 3
    270M's start on real choosing rows: 1.1000 against ln 3's 1.0986), so uniform is the floor
    a run must beat."""
    layer = heads.output_layer(model)
    if layer is None:
        return None
    kept = [p.detach().clone() for p in layer.parameters()]
    heads.zero_output(layer)
    try:
        return float(trainer.evaluate()["eval_loss"])
    finally:
        with torch.no_grad():
            for p, k in zip(layer.parameters(), kept):
                p.copy_(k)
