"""`make gpu-check`: does the GPU path work on this machine? A pass/fail table in minutes.

Uses only what is installed (torch, transformers, peft; bitsandbytes for the quantized rows):
no `make install`, no download. Real model shapes with random weights, token ids drawn with the
real length mix of the competition (Gemma tokenizer, max length 2048; quantiles below), so it
runs on a GPU workstation, on Kaggle's image and on an offline cloud box alike.

    PYTHONPATH=. python3 -m benchmarks.gpu_check            # needs CUDA
    PYTHONPATH=. python3 -m benchmarks.gpu_check --smoke    # tiny shapes on CPU (the test suite)

Rows: Gemma-2-2B (LoRA r16 q/k, 3-layer head) in bf16 and in fp16 (the T4 path): untuned
scoring, training steps, save, reload with the same logits, swap-TTA scoring through the
engine; Gemma-2-9B shape in 4-bit NF4 and Llama-3-8B shape in 8-bit with fewer layers (peak
memory extrapolated per layer, stated as such); two workers on one GPU equal one.
Writes benchmarks/results/gpu_check.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.infer import engine
from lmsys_pref.model import models
from lmsys_pref.train import loop

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"
# Token lengths of the 1,500 real rows (Gemma tokenizer, gemma layout, max 2048): 5% quantiles.
LENGTH_QUANTILES = [26, 102, 138, 183, 229, 275, 328, 379, 433, 491, 546, 599, 668, 729, 778,
                    860, 968, 1098, 1368, 1848, 2048]
GEMMA2_2B = dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216,
                 num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                 max_position_embeddings=8192, sliding_window=4096, vocab_size=256000)
GEMMA2_9B = dict(GEMMA2_2B, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                 num_attention_heads=16, num_key_value_heads=8)
LLAMA3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 max_position_embeddings=8192, vocab_size=128256)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, vocab_size=512, max_position_embeddings=512)


class StandInTokenizer:
    """What a random model needs of a tokenizer: a vocabulary size and a pad id."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self.pad_token_id = vocab_size, 0

    def __len__(self) -> int:
        return self.vocab_size

    def save_pretrained(self, path) -> None:
        """Nothing to save: the ids are random."""


def real_length_mix(n: int, max_length: int, seed: int = 0) -> list[list[int]]:
    """`n` rows of random token ids whose lengths follow the competition's length mix."""
    rng = np.random.default_rng(seed)
    scale = max_length / LENGTH_QUANTILES[-1]
    qs = np.interp(rng.uniform(0, 1, n), np.linspace(0, 1, len(LENGTH_QUANTILES)),
                   LENGTH_QUANTILES)
    return [rng.integers(1, 500, max(int(q * scale), 8)).tolist() for q in qs]


def lm_config(shape: dict, dtype: str, device: str, max_length: int, **extra) -> LMConfig:
    """The Gemma-2 seeds' LoRA setting (r16 on q/k, 3-layer head) on a random `shape`."""
    values = dict(random_init={k: v for k, v in shape.items() if k != "vocab_size"},
                  dtype=dtype, devices=device, lora_r=16, lora_alpha=32, lora_dropout=0.0,
                  lora_targets=["q_proj", "k_proj"], head_layers=3, max_length=max_length,
                  batch_size=2, grad_accum=1, grad_checkpointing=True, logging_steps=10,
                  save_steps=10_000, learning_rate=1e-4, warmup_ratio=0.0,
                  group_by_length=False, token_budget=8 * max_length)
    return LMConfig.from_dict({**values, **extra})


def collate_rows(rows: list[dict]) -> dict:
    ids, mask = engine.collate([r["input_ids"] for r in rows], 0, "cpu")
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor([r["labels"] for r in rows])}


def score(model, rows, device: str, budget: int) -> np.ndarray:
    return engine.predict_ids(model, rows, pad_id=0, token_budget=budget, devices=device,
                              progress=False)


def full_lm_path(shape: dict, dtype: str, device: str, steps: int, n_rows: int,
                 max_length: int) -> dict:
    """Untuned scoring, `steps` LoRA steps, save, reload, swap-TTA scoring: what was seen."""
    from transformers import Trainer

    cfg = lm_config(shape, dtype, device, max_length, max_steps=steps)
    tok = StandInTokenizer(shape["vocab_size"])
    model, _ = models.build(cfg, device, tokenizer=tok)
    rows = real_length_mix(n_rows, max_length)
    untuned = score(model, rows, device, cfg.token_budget)
    labels = np.random.default_rng(1).integers(0, 3, len(rows))
    with tempfile.TemporaryDirectory() as out:
        args = loop.training_args(cfg, out, device)
        trainer = Trainer(model=model, args=args, data_collator=collate_rows,
                          train_dataset=loop.RowDataset(rows, labels))
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        model.eval()
        before = score(model, rows[:8], device, cfg.token_budget)
        models.save(model, tok, cfg, Path(out) / "model")
        again = reload_adapter(cfg, tok, Path(out) / "model", device)
        after = score(again, rows[:8], device, cfg.token_budget)
        swapped = [list(reversed(r)) for r in rows]
        t0 = time.perf_counter()
        tta = score(again, rows + swapped, device, cfg.token_budget)
        tta_s = time.perf_counter() - t0
    return {"untuned_max_gap_to_uniform": float(np.abs(untuned - 1 / 3).max()),
            "train_steps": trainer.state.global_step, "train_seconds": round(train_s, 2),
            "loss_finite": bool(losses) and all(np.isfinite(losses)),
            "reload_max_abs_diff": float(np.abs(after - before).max()),
            "tta_rows": len(tta) // 2, "tta_seconds": round(tta_s, 2),
            "attn_implementation": models.describe(again)["attn_implementation"],
            "peak_gib": peak_gib(device)}


def reload_adapter(cfg, tok, model_dir: Path, device: str):
    """The saved adapter + head on a fresh random base with the same seed (= the same base)."""
    from peft import PeftModel

    base = models.load_base(cfg, tok, device)
    return PeftModel.from_pretrained(base, str(model_dir)).eval()


def peak_gib(device: str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def quantized_path(shape: dict, quantization: str, device: str, layers: tuple[int, int],
                   max_length: int) -> dict:
    """Load `shape` with fewer layers in 4/8-bit, one LoRA step, scoring; peak memory at
    two layer counts, extrapolated linearly to the full depth (stated as such)."""
    peaks = {}
    for n_layers in layers:
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        small = dict(shape, num_hidden_layers=n_layers)
        tok = StandInTokenizer(shape["vocab_size"])
        with tempfile.TemporaryDirectory() as base_dir:
            fp16 = lm_config(small, "fp16", "cpu", max_length, lora_r=0)
            models.load_base(fp16, tok, "cpu").save_pretrained(base_dir)
            cfg = lm_config(small, "auto" if device != "cpu" else "fp32", device, max_length,
                            model_id=base_dir, quantization=quantization)
            cfg = cfg.replace(random_init={})
            model, _ = models.build(cfg, device, tokenizer=tok)
            rows = real_length_mix(4, max_length)
            batch = collate_rows([{"input_ids": r, "labels": 0} for r in rows[:2]])
            batch = {k: v.to(device) for k, v in batch.items()}
            model.train()
            model(**batch).loss.backward()
            probs = score(model.eval(), rows, device, 2 * max_length)
            assert np.isfinite(probs).all()
            peaks[n_layers] = peak_gib(device)
        del model
    a, b = layers
    full = None
    if peaks[a] is not None:
        per_layer = (peaks[b] - peaks[a]) / (b - a)
        full = round(peaks[a] + per_layer * (shape["num_hidden_layers"] - a), 2)
    return {"scored": True, "layers_loaded": list(layers), "peak_gib": peaks,
            "peak_gib_extrapolated_full_depth": full}


def two_workers_one_gpu(shape: dict, device: str, max_length: int) -> dict:
    cfg = lm_config(shape, "auto" if device != "cpu" else "bf16", device, max_length)
    model, _ = models.build(cfg, device, tokenizer=StandInTokenizer(shape["vocab_size"]))
    model.eval()
    rows = real_length_mix(64, max_length)
    one = score(model, rows, device, cfg.token_budget)
    two = score(model, rows, f"{device},{device}", cfg.token_budget)
    return {"max_abs_diff": float(np.abs(one - two).max())}


def checks(smoke: bool) -> list[tuple[str, callable, callable]]:
    """(name, run, passed) per row of the table."""
    dev = "cpu" if smoke else "cuda:0"
    shape2b = dict(GEMMA2_2B, **TINY) if smoke else GEMMA2_2B
    length = 128 if smoke else 2048
    steps, n_rows = (3, 16) if smoke else (30, 256)
    def ok_lm(r):
        return (r["untuned_max_gap_to_uniform"] < 1e-6 and r["loss_finite"]
                 and r["train_steps"] == steps and r["reload_max_abs_diff"] < 5e-3)
    rows = [("gemma2-2b bf16: untuned, train, save, reload, swap TTA",
             lambda: full_lm_path(shape2b, "bf16", dev, steps, n_rows, length), ok_lm),
            ("gemma2-2b fp16 (T4 path): untuned, train, save, reload, swap TTA",
             lambda: full_lm_path(shape2b, "fp16", dev, steps, n_rows, length), ok_lm),
            ("two scoring workers on one device equal one",
             lambda: two_workers_one_gpu(shape2b, dev, length),
             lambda r: r["max_abs_diff"] < 1e-6)]
    shape9b, shape8b = (dict(s, **TINY) for s in (GEMMA2_9B, LLAMA3_8B)) if smoke \
        else (GEMMA2_9B, LLAMA3_8B)
    layers = (1, 2) if smoke else (2, 4)
    rows += [("gemma2-9b shape, 4-bit NF4: load, LoRA step, scoring, memory",
              lambda: quantized_path(shape9b, "4bit", dev, layers, length),
              lambda r: r["scored"]),
             ("llama3-8b shape, 8-bit: load, LoRA step, scoring, memory",
              lambda: quantized_path(shape8b, "8bit", dev, layers, length),
              lambda r: r["scored"])]
    return rows


def run(smoke: bool = False, out: Path = RESULTS) -> list[dict]:
    """Run every check, print the table, write the JSON; returns the rows."""
    results = []
    for name, fn, passed in checks(smoke):
        t0 = time.perf_counter()
        try:
            detail = fn()
            status = "pass" if passed(detail) else "FAIL"
        except Exception as err:  # a failed row is reported, the others still run
            if "bitsandbytes" in str(err) and importlib.util.find_spec("bitsandbytes") is None:
                detail, status = {"reason": "bitsandbytes is not installed"}, "skip"
            else:
                detail, status = {"error": f"{type(err).__name__}: {err}",
                                  "trace": traceback.format_exc(limit=3)}, "FAIL"
        results.append({"check": name, "status": status, "seconds": round(
            time.perf_counter() - t0, 1), **detail})
        print(f"{status:>4}  {name}  ({results[-1]['seconds']} s)", flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not smoke else "cpu"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "torch": torch.__version__,
                               "smoke": smoke, "checks": results}, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (no GPU needed)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False); "
              "--smoke runs the same checks at tiny sizes on CPU", file=sys.stderr)
        return 2
    results = run(args.smoke, args.out)
    print(f"-> {args.out}")
    return 0 if all(r["status"] != "FAIL" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
