"""Training the transformer baselines with the Hugging Face `Trainer`.

`fit(cfg)` is the one entry point for LMConfig (Gemma/Llama LoRA on an 80/20 holdout) and
EncoderConfig (RoBERTa/MiniLM, k-fold; delegated to `lmsys_pref.encoder.fit_kfold`). It writes
the run-folder contract into `cfg.out_dir`: submission.csv, metrics.json, val.csv (oof.csv for
k-fold), model/ (adapter + head + tokenizer + lmsys_pref.json), log_history.json, loss.png and
checkpoints/ (the Trainer's, for resuming an interrupted run).
"""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data, metrics, models, postrules, prompt, runs

log = logging.getLogger("lmsys_pref.train")
HISTORY = "log_history.json"


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
    from .devices import parse_devices
    return str(parse_devices(cfg.devices)[0])


def _eval_metrics(eval_pred, objective: str) -> dict:
    logits, labels = eval_pred
    labels = np.asarray(labels)
    labels = labels.argmax(1) if labels.ndim == 2 else labels
    probs = models.to_probs(np.asarray(logits), objective)
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
    """(n, 3) probabilities of `df`'s rows through `lmsys_pref.infer` (swap TTA when asked)."""
    from . import infer
    model.eval()
    return infer.predict_frame(model, tokenizer, df, cfg, tta=tta)


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


def _pissa_init(model, cfg, out_dir: Path) -> Path | None:
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


def fit(cfg) -> dict:
    """Train a transformer baseline and write its run folder; returns the metrics.

    Args:
        cfg: an LMConfig (holdout of `val_frac`) or an EncoderConfig (k-fold when
            `n_folds` > 1, see `lmsys_pref.encoder.fit_kfold`).

    Returns:
        The metrics written to metrics.json: `val_log_loss` (or `cv_log_loss`), `accuracy`,
        `n_train`, `n_val`, `n_test`, `seconds`, `steps`, `untuned_val_log_loss` when asked.
    """
    t0 = time.time()
    setup(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    train_df, test_df = data.load_competition(cfg.data_dir, lenient=cfg.lenient,
                                              max_train_rows=cfg.max_train_rows,
                                              max_test_rows=cfg.max_test_rows)
    postrules.save(postrules.fit(train_df), out / "model")  # used by `predict -p post_rules true`
    if cfg.kind == "encoder" and getattr(cfg, "n_folds", 0) > 1:
        from .encoder import fit_kfold
        return fit_kfold(cfg, train_df, test_df, t0)
    tr, va = data.holdout(train_df["label"].to_numpy(), cfg.val_frac, cfg.seed)
    model, tokenizer = models.build(cfg, training_device(cfg))
    pissa = _pissa_init(model, cfg, out)
    res = train_one(cfg, model, tokenizer, train_df.iloc[tr], train_df.iloc[va], out)
    models.save(model, tokenizer, cfg, out / "model", pissa)
    val_labels = train_df["label"].to_numpy()[va]
    m = summarize(res, val_labels, "val_log_loss", n_train=len(tr), n_val=len(va))
    return finish(cfg, model, tokenizer, test_df, m, res["history"], t0,
                  runs.probs_frame(train_df["id"].to_numpy()[va], res["val_probs"], val_labels),
                  "val.csv")


def summarize(res: dict, labels, key: str, **extra) -> dict:
    """Metrics of one scored set (`res` from `train_one`, or an OOF equivalent)."""
    m = {key: metrics.log_loss(labels, res["val_probs"]),
         "accuracy": metrics.accuracy(labels, res["val_probs"]), **extra,
         "steps": res.get("steps"), "train_loss_first": res.get("train_loss_first"),
         "train_loss_last": res.get("train_loss_last")}
    if res.get("untuned_probs") is not None:
        m["untuned_" + key] = metrics.log_loss(labels, res["untuned_probs"])
    return m


def finish(cfg, model, tokenizer, test_df, m: dict, history: list, t0: float,
           oof: pd.DataFrame, oof_name: str) -> dict:
    """Score the test set, write the run folder and the loss curve; returns the metrics."""
    out = Path(cfg.out_dir)
    test_probs = predict(model, tokenizer, test_df, cfg) if test_df is not None else None
    m.update(n_test=0 if test_df is None else len(test_df), seconds=round(time.time() - t0, 1),
             model_id=cfg.model_id, preset_kind=cfg.kind)
    runs.save_json(out / HISTORY, history)
    runs.write_outputs(out, test_ids=None if test_df is None else test_df["id"].to_numpy(),
                       test_probs=test_probs, metrics=m, oof=oof, oof_name=oof_name)
    plot_history(out)
    log.info("%s: %s", out, json.dumps({k: v for k, v in m.items() if "loss" in k}))
    return m


def plot_history(run_dir: str | Path):
    """Training loss and validation log loss per step from log_history.json -> loss.png."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    hist = runs.load_json(Path(run_dir) / HISTORY)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("loss", "-"), ("eval_log_loss", "o--")):
        pts = [(h["step"], h[key]) for h in hist if key in h and h[key] is not None]
        if pts:
            ax.plot(*zip(*pts), style, label="train loss" if key == "loss" else "val log loss")
    ax.axhline(np.log(3), color="grey", lw=0.8, ls=":", label="uniform (1.0986)")
    ax.set(xlabel="optimizer step", ylabel="loss", title=Path(run_dir).name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(run_dir) / "loss.png", dpi=100)
    return fig
