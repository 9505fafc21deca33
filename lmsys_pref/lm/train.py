"""The training loop of the transformer baselines: one model, one split, the Hugging Face `Trainer`.

`train_one` trains on some rows and scores others; `lmsys_pref.lm.fit` builds the holdout and
k-fold runs from it. Checkpoints go to `<out_dir>/checkpoints` (the Trainer's, for resuming).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import data, metrics
from ..infer import predictor
from . import heads, models, prompt

log = logging.getLogger("lmsys_pref.lm.train")


class RowDataset(torch.utils.data.Dataset):
    """Token ids + targets (class index for "ce", one-hot floats for "mse")."""

    def __init__(self, input_ids: list[list[int]], labels, objective: str = "ce"):
        self.input_ids = input_ids
        labels = np.asarray(labels, dtype=int)
        self.labels = data.onehot(labels).tolist() if objective == "mse" else labels.tolist()

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def training_device(cfg) -> str:
    """The device training runs on: the first entry of `cfg.devices` ('auto' = cuda:0 or cpu)."""
    return str(predictor.parse_devices(cfg.devices)[0])


def _eval_metrics(eval_pred, objective: str) -> dict:
    logits, labels = eval_pred
    labels = np.asarray(labels)
    labels = labels.argmax(1) if labels.ndim == 2 else labels
    probs = heads.to_probs(np.asarray(logits), objective)
    return {"log_loss": metrics.log_loss(labels, probs), "accuracy": metrics.accuracy(labels, probs)}


def training_args(cfg, out_dir: str | Path, device: str):
    """`TrainingArguments`: AdamW, warm-up + decay, accumulation, checkpointing, mixed precision."""
    from transformers import TrainingArguments
    dtype = models.resolve_dtype(cfg.dtype, device)
    on_gpu = torch.device(device).type == "cuda"
    quantized = cfg.quantization not in ("", "none")  # prepare_model_for_kbit_training did it
    return TrainingArguments(
        output_dir=str(Path(out_dir) / "checkpoints"), seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        optim="adamw_torch", lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        activation_checkpointing=cfg.grad_checkpointing and not quantized,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        eval_strategy="steps" if cfg.eval_steps > 0 else "no", eval_steps=cfg.eval_steps or None,
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=1, report_to="none", use_cpu=not on_gpu,
        label_names=["labels"], remove_unused_columns=False, disable_tqdm=False,
        dataloader_num_workers=0)


def predict(model, tokenizer, df: pd.DataFrame, cfg, tta: str | None = None) -> np.ndarray:
    """(n, 3) probabilities of `df`'s rows through the inference engine (swap TTA when asked)."""
    model.eval()
    return predictor.predict_frame(model, tokenizer, df, cfg, tta=tta)


def train_one(cfg, model, tokenizer, train_df: pd.DataFrame, val_df: pd.DataFrame,
              out_dir: str | Path) -> dict:
    """Train `model` on `train_df`, score `val_df`; resumes from out_dir/checkpoints.

    Returns:
        `val_probs`, `untuned_probs` (when `cfg.untuned_baseline`), `history` (the Trainer's
        log), `train_loss_first` / `train_loss_last` (first and last logged training loss).
    """
    from transformers import DataCollatorWithPadding, Trainer
    from transformers.trainer_utils import get_last_checkpoint
    out_dir = Path(out_dir)
    untuned = predict(model, tokenizer, val_df, cfg) if cfg.untuned_baseline else None
    rows = data.augment_with_swap(train_df) if cfg.swap_augment else train_df
    train_ds = RowDataset(prompt.encode(rows, tokenizer, cfg), rows["label"], cfg.objective)
    val_ds = RowDataset(prompt.encode(val_df, tokenizer, cfg), val_df["label"], cfg.objective)
    device = training_device(cfg)
    trainer = Trainer(model=model, args=training_args(cfg, out_dir, device),
                      train_dataset=train_ds, eval_dataset=val_ds if cfg.eval_steps > 0 else None,
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=partial(_eval_metrics, objective=cfg.objective))
    # a PeftModel's forward takes **kwargs, so the Trainer assumes the model divides the loss by
    # the accumulation count itself; sequence classifiers do not: loss and gradients would be
    # summed over the accumulated batches instead of averaged
    trainer.model_accepts_loss_kwargs = False
    ckpt = out_dir / "checkpoints"
    last = get_last_checkpoint(str(ckpt)) if cfg.resume and ckpt.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    val_probs = predict(model, tokenizer, val_df, cfg)
    history = list(trainer.state.log_history)
    history.append({"step": trainer.state.global_step, "epoch": trainer.state.epoch,
                    "eval_log_loss": metrics.log_loss(val_df["label"], val_probs)})
    log.info("step %d: val log loss %.4f", trainer.state.global_step, history[-1]["eval_log_loss"])
    losses = [h["loss"] for h in history if "loss" in h]
    return {"val_probs": val_probs, "untuned_probs": untuned, "history": history,
            "train_loss_first": losses[0] if losses else None,
            "train_loss_last": losses[-1] if losses else None,
            "steps": trainer.state.global_step}


def pissa_init(model, cfg, out_dir: Path) -> Path | None:
    """Save the PiSSA starting adapter: needed to save the result as LoRA of the original base."""
    if cfg.lora_r <= 0 or not str(cfg.lora_init).startswith("pissa"):
        return None
    path = out_dir / "pissa_init"
    pcfg = model.peft_config["default"]
    init, pcfg.init_lora_weights = pcfg.init_lora_weights, True
    model.save_pretrained(str(path))
    pcfg.init_lora_weights = init
    return path


def setup(cfg) -> None:
    """Thread count and seeds before anything is built."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    from transformers import set_seed
    set_seed(cfg.seed)
