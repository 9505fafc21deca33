"""The training loop of the transformer baselines: one model, one split, the Hugging Face `Trainer`.

`train_one` trains on some rows and scores others; `lmsys_pref.train.fit` builds the holdout and
k-fold runs from it. Checkpoints go to `<out_dir>/checkpoints` (the Trainer's, for resuming).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate.utils import DistributedType
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.utils.notebook import NotebookProgressCallback

from .. import data
from ..data import metrics
from ..infer import devices, predictor
from ..model import models, precision, prompt, warmstart
from ..runs import resume
from . import best, distill

log = logging.getLogger("lmsys_pref.train.loop")


class RowDataset(torch.utils.data.Dataset):
    """Token ids + targets (class index for "ce", one-hot floats for "mse", or (n, 3)
    probabilities as given) + extra per-row `fields` (e.g. teacher probabilities)."""

    def __init__(self, input_ids: list[list[int]], labels, objective: str = "ce", **fields):
        self.input_ids = input_ids
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = data.onehot(labels) if objective == "mse" else labels.astype(int)
        self.labels = labels.tolist()
        self.fields = {k: np.asarray(v).tolist() for k, v in fields.items()}

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i],
                **{k: v[i] for k, v in self.fields.items()}}


def training_device(cfg) -> str:
    """The device training runs on: the first entry of `cfg.devices` ('auto' = cuda:0 or cpu)."""
    return str(predictor.parse_devices(cfg.devices)[0])


class OneDeviceArguments(TrainingArguments):
    """`TrainingArguments` that keep a single-process run on the one device it was given.

    In one process the Trainer otherwise sees every GPU of the host: it wraps the model in
    `DataParallel` (under which autocast does nothing) and multiplies the batch by the GPU
    count, on cuda:0 whatever `devices` says. Several GPUs train with torchrun/accelerate
    (DDP), where each process already owns one device; that path is left as it is.
    """

    def __init__(self, *args, device_name: str = "", **kwargs):
        self.device_name = device_name  # read by _setup_devices, which __init__ may trigger
        super().__init__(*args, **kwargs)

    @cached_property
    def _setup_devices(self) -> torch.device:
        device = TrainingArguments._setup_devices.func(self)
        state = self.distributed_state
        distributed = state is not None and state.distributed_type != DistributedType.NO
        pinned = torch.device(self.device_name or device)
        if distributed or pinned.type != "cuda":
            return device
        self._n_gpu = 1
        torch.cuda.set_device(pinned)  # accelerate places the model on the current device
        return pinned


def _checkpointing(on: bool) -> dict:
    """Activation checkpointing in the spelling of the installed transformers: 5.23 says
    `activation_checkpointing`, 5.17 (on the GPU images users have) `gradient_checkpointing`."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": on,
            f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}


def training_args(cfg, out_dir: str | Path, device: str) -> OneDeviceArguments:
    """`TrainingArguments` on `device`: AdamW, warm-up + decay, accumulation, checkpointing,
    mixed precision following `cfg.dtype` (bf16 or fp16 autocast on a GPU); with `keep_best`,
    evaluation and best-checkpoint selection (`best.training_arguments`)."""
    dtype = models.resolve_dtype(cfg.dtype, device)
    on_gpu = torch.device(device).type == "cuda"
    quantized = cfg.quantization not in ("", "none")  # prepare_model_for_kbit_training did it
    selection = {"eval_strategy": "no", "save_steps": cfg.save_steps, "save_total_limit": 1,
                 **(best.training_arguments(cfg) if cfg.keep_best else {})}
    return OneDeviceArguments(
        device_name=device, **selection,
        output_dir=str(Path(out_dir) / "checkpoints"), seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        optim="adamw_torch", lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        **_checkpointing(cfg.grad_checkpointing and not quantized),
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps",
        report_to="none", use_cpu=not on_gpu, label_names=["labels"],
        remove_unused_columns=False, disable_tqdm=False, dataloader_num_workers=0)


def predict(model, tokenizer, df: pd.DataFrame, cfg, tta: str | None = None) -> np.ndarray:
    """(n, 3) probabilities of `df`'s rows on the training device, through the engine.

    Scoring stays on the device the model trained on: no copy of a trained (maybe quantized)
    model is made while the Trainer's state still sits on a GPU. It runs without the autocast
    wrapper of mixed-precision training, as a reloaded model would (`precision.autocast_off`),
    and once per DDP run: each rank scores its share of the rows (`devices.across_ranks`).
    """
    model.eval()
    one_device = dataclasses.replace(cfg.scoring, devices=training_device(cfg))

    def score(rows: np.ndarray) -> np.ndarray:
        return predictor.predict_frame(model, tokenizer, df.iloc[rows], cfg.prompt, one_device,
                                       tta=tta)[0]

    chars = sum(df[col].astype(str).str.len().to_numpy() for col in data.TEXT_COLS)
    with precision.autocast_off(model):
        return devices.across_ranks(score, chars)  # ranks get alike mixes of lengths


class HoldoutEval(TrainerCallback):
    """Every `cfg.eval_steps` optimizer steps, the log loss of a fixed sample of the holdout.

    The rows go through the length-sorted engine; the Trainer's own evaluation would pad
    unsorted batches of `batch_size` and score the whole holdout each time (about doubling the
    wall time of a Gemma-2 run). The whole holdout is scored once, after training.
    """

    def __init__(self, model, tokenizer, rows: pd.DataFrame, cfg):
        self.model, self.tokenizer, self.rows, self.cfg = model, tokenizer, rows, cfg

    def on_step_end(self, args, state, control, **kwargs):
        if self.cfg.eval_steps <= 0 or state.global_step % self.cfg.eval_steps:
            return control
        was_training = self.model.training
        probs = predict(self.model, self.tokenizer, self.rows, self.cfg)
        self.model.train(was_training)
        loss = metrics.log_loss(self.rows["label"], probs)
        state.log_history.append({"step": state.global_step, "epoch": state.epoch,
                                  "eval_log_loss": loss, "eval_rows": len(self.rows)})
        log.info("step %d: log loss %.4f on %d holdout rows", state.global_step, loss,
                 len(self.rows))
        return control


def eval_sample(val_df: pd.DataFrame, cfg) -> pd.DataFrame:
    """The fixed, seeded sample of at most `cfg.eval_rows` holdout rows scored during training."""
    if len(val_df) <= cfg.eval_rows:
        return val_df
    return val_df.sample(n=cfg.eval_rows, random_state=cfg.seed)


def _release(trainer) -> None:
    """Drop the optimizer and scheduler states before scoring (GPU memory back), and the
    autocast wrapper that mixed precision put on the model's forward."""
    trainer.optimizer = trainer.lr_scheduler = None
    precision.unwrap_autocast(trainer.model)
    trainer.accelerator.free_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclasses.dataclass
class TrainResult:
    """What training one model (or, for k folds, all of them) gives the run's scoring."""

    val_probs: np.ndarray
    """(n, 3) probabilities of the held-out rows (a holdout, or every fold's OOF rows)."""
    untuned_probs: np.ndarray | None
    """The same rows before fine-tuning (`untuned_baseline`), else None."""
    history: list[dict]
    """The Trainer's log (training loss per logged step, held-out log loss), folds in order."""
    steps: int
    """Optimizer steps, all folds together."""

    @property
    def train_losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    @property
    def train_loss_first(self) -> float | None:
        """The first logged training loss (the first fold's first)."""
        return self.train_losses[0] if self.train_losses else None

    @property
    def train_loss_last(self) -> float | None:
        """The last logged training loss (the last fold's last)."""
        return self.train_losses[-1] if self.train_losses else None


def train_one(cfg, model, tokenizer, train_df: pd.DataFrame, val_df: pd.DataFrame,
              out_dir: str | Path) -> TrainResult:
    """Train `model` on `train_df`, score `val_df`; resumes from out_dir/checkpoints."""
    out_dir = Path(out_dir)
    last = resume.check_resume(out_dir, cfg)  # None, or the last complete checkpoint
    untuned = predict(model, tokenizer, val_df, cfg) if cfg.untuned_baseline else None
    targets_spec, stop = cfg.distill, None
    if cfg.keep_best:  # rows held out of the fit choose the checkpoint, never val_df
        train_df, stop = best.split_stop_rows(train_df, cfg)
        if stop is None:  # too few rows to choose: trained as without keep_best
            cfg = cfg.replace(keep_best=False, early_stopping_patience=0)
    rows, targets, fields = distill.training_rows(train_df, targets_spec)  # swaps, teachers
    train_ds = distill.dataset(RowDataset(prompt.encode(rows, tokenizer, cfg.prompt), targets,
                                          cfg.objective, **fields), targets_spec)
    trainer = distill.trainer(  # the model's own loss, or distill.loss (compute_loss)
        targets_spec, model=model, args=training_args(cfg, out_dir, training_device(cfg)),
        train_dataset=train_ds, data_collator=distill.collator(tokenizer, targets_spec),
        eval_dataset=None if stop is None else best.eval_dataset(stop, tokenizer, cfg,
                                                                 RowDataset),
        callbacks=best.callbacks(cfg) if cfg.keep_best else [
            HoldoutEval(model, tokenizer, eval_sample(val_df, cfg), cfg)])
    # a PeftModel's forward takes **kwargs, so the Trainer assumes the model divides the loss by
    # the accumulation count itself; sequence classifiers do not: loss and gradients would be
    # summed over the accumulated batches instead of averaged
    trainer.model_accepts_loss_kwargs = False
    if os.environ.get("LMSYS_PREF_HEADLESS"):  # a papermill run: text progress, not HTML
        trainer.remove_callback(NotebookProgressCallback)
        trainer.add_callback(ProgressCallback)
    if last:
        log.info("resuming from %s", last)
    start = best.StartPoint.measure(trainer, model) if stop is not None else None
    trainer.train(resume_from_checkpoint=last)
    history, steps = list(trainer.state.log_history), trainer.state.global_step
    if start is not None:  # the best checkpoint is loaded; the start may still beat it
        history.append({"step": steps, **start.keep_if_better(
            trainer, model, trainer.state.best_metric, trainer.state.best_global_step)})
    _release(trainer)
    val_probs = predict(model, tokenizer, val_df, cfg)
    history.append({"step": steps, "epoch": history[-1].get("epoch") if history else None,
                    "eval_log_loss": metrics.log_loss(val_df["label"], val_probs),
                    "eval_rows": len(val_df)})
    log.info("step %d: val log loss %.4f (%d rows)", steps, history[-1]["eval_log_loss"],
             len(val_df))
    return TrainResult(val_probs, untuned, history, steps)


def warm_start(model, cfg) -> dict:
    """With `init_from`: the trained run's adapter (or weights) and head in `model`
    (`model.warmstart`); metrics.json's `init_from` ({} without)."""
    if not cfg.init_from:
        return {}
    loaded = warmstart.start_from(model, cfg.model, cfg.init_from)
    log.info("init_from %s: %d tensors, head rows %d", loaded["init_from"], loaded["tensors"],
             loaded["head_rows"])
    return {"init_from": loaded}


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
