"""`make gpu-check`: does the GPU path work on this machine? A pass/fail table in minutes.

Uses only what is installed (torch, transformers, peft; bitsandbytes for the quantized rows):
no `make install`, no download. Real model shapes with random weights, token ids drawn with the
real length mix of the competition (Gemma tokenizer, max length 2048; quantiles below), so it
runs on a GPU workstation, on Kaggle's image and on an offline cloud box alike.

    PYTHONPATH=. python3 -m benchmarks.gpu_check            # needs CUDA
    PYTHONPATH=. python3 -m benchmarks.gpu_check --smoke    # tiny shapes on CPU (the test suite)

Rows: Gemma-2-2B (LoRA r16 q/k, 3-layer head) in bf16 (the attention `auto` picks here) and
in the T4's setup (`benchmarks.t4`: fp16 weights, the attention `auto` picks on compute 7.5,
eager for Gemma-2, never flex_attention): untuned scoring, training steps, save, reload with
the same logits, swap-TTA scoring through the engine, with the MFU of training and of scoring
against the device's peak (`benchmarks.mfu`: by device name, or --peak-tflops; a measured bf16
matmul peak is printed beside it) and the graphs torch compiled (flex_attention); Gemma-2-9B
shape in 4-bit NF4 and Llama-3-8B shape in 8-bit with fewer layers (peak memory extrapolated
per layer, stated as such; skipped, with the reason, where bitsandbytes is not installed); two
workers on one GPU equal one. Random models are built on the GPU in bf16 (seconds, not the
minutes of a CPU build). Every row starts from empty compile caches and fails on any
recompile-limit hit, which torch passes over by running unfused (`benchmarks.compiles`).
Writes benchmarks/results/gpu_check.json.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks import compiles, mfu, t4
from benchmarks.compiles import graphs_compiled
from benchmarks.gpu_models import (  # noqa: F401 (public here too)
    GEMMA2_2B,
    GEMMA2_9B,
    LENGTH_QUANTILES,
    LLAMA3_8B,
    TINY,
    StandInTokenizer,
    collate_rows,
    lm_config,
    on_device,
    peak_gib,
    real_length_mix,
)
from lmsys_pref.infer import engine
from lmsys_pref.model import heads, models
from lmsys_pref.train import loop

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"


def score(model, rows, device: str, budget: int) -> np.ndarray:
    return engine.predict_ids(model, rows, pad_id=0, token_budget=budget, devices=device,
                              progress=False)


def full_lm_path(shape: dict, dtype: str, device: str, steps: int, n_rows: int,
                 max_length: int, peak: float | None = None, attn: str = "auto") -> dict:
    """Untuned scoring, `steps` LoRA steps, save, reload, swap-TTA scoring: what was seen.

    `dtype` and `attn` are the config's `dtype` and `attn_implementation` ('auto': the
    library's choice on this device); the detail names the kernel and weights dtype loaded.
    """
    from transformers import Trainer

    cfg = lm_config(shape, dtype, device, max_length, max_steps=steps, attn_implementation=attn)
    tok = StandInTokenizer(shape["vocab_size"])
    with on_device(device):
        model, _ = models.build(cfg.model, device, tokenizer=tok)
    rows = real_length_mix(n_rows, max_length)
    graphs = graphs_compiled()
    untuned = score(model, rows, device, cfg.token_budget)
    scoring_graphs, graphs = graphs_compiled() - graphs, graphs_compiled()
    labels = np.random.default_rng(1).integers(0, 3, len(rows))
    with tempfile.TemporaryDirectory() as out:
        args, seen = loop.training_args(cfg, out, device), []
        trainer = Trainer(model=model, args=args, data_collator=lambda b: collate_rows(b, seen),
                          train_dataset=loop.RowDataset(rows, labels))
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        training = mfu.utilisation(model, seen, train_s, peak, training=True)
        training_graphs = graphs_compiled() - graphs
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
        scoring = mfu.utilisation(again, [len(r) for r in rows + swapped], tta_s, peak, False)
    # log loss above ln 3 that any labels would meet on average: mean of -log(3 p) per class
    return {"untuned_excess_over_ln3": float(-np.log(3 * untuned).mean()),
            "train_steps": trainer.state.global_step, "train_seconds": round(train_s, 2),
            "loss_finite": bool(losses) and all(np.isfinite(losses)),
            "reload_max_abs_diff": float(np.abs(after - before).max()),
            "tta_rows": len(tta) // 2, "tta_seconds": round(tta_s, 2),
            **models.describe(again),  # attn_implementation, weights_dtype
            "train_mfu": training["mfu"], "train_tflops_per_s": training["tflops_per_s"],
            "scoring_mfu": scoring["mfu"], "scoring_tflops_per_s": scoring["tflops_per_s"],
            "scoring_graphs_compiled": scoring_graphs,
            "training_graphs_compiled": training_graphs, "peak_gib": peak_gib(device)}


def reload_adapter(cfg, tok, model_dir: Path, device: str):
    """The saved adapter + head on a fresh random base with the same seed (= the same base)."""
    from peft import PeftModel

    with on_device(device):
        base = models.load_base(cfg.model, tok, device)
    return PeftModel.from_pretrained(base, str(model_dir), torch_device=device).eval()


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
            fp16 = lm_config(small, "fp16", device, max_length, lora_r=0)
            with on_device(device):
                models.load_base(fp16.model, tok, device).save_pretrained(base_dir)
            cfg = lm_config(small, "auto" if device != "cpu" else "fp32", device, max_length,
                            model_id=base_dir, quantization=quantization)
            cfg = cfg.replace(random_init={})
            model, _ = models.build(cfg.model, device, tokenizer=tok)
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
    with on_device(device):
        model, _ = models.build(cfg.model, device, tokenizer=StandInTokenizer(shape["vocab_size"]))
    model.eval()
    rows = real_length_mix(64, max_length)
    one = score(model, rows, device, cfg.token_budget)
    two = score(model, rows, f"{device},{device}", cfg.token_budget)
    return {"max_abs_diff": float(np.abs(one - two).max())}


def checks(smoke: bool, peak: float | None = None) -> list[tuple]:
    """(name, run, passed, package it needs) per row of the table."""
    dev = "cpu" if smoke else "cuda:0"
    shape2b = dict(GEMMA2_2B, **TINY) if smoke else GEMMA2_2B
    length = 128 if smoke else 2048
    steps, n_rows = (3, 16) if smoke else (30, 256)
    def ok_lm(r):
        return (r["untuned_excess_over_ln3"] < heads.UNTUNED_TOL and r["loss_finite"]
                 and r["train_steps"] == steps and r["reload_max_abs_diff"] < 5e-3)
    on_t4 = t4.setup(shape2b)  # fp16; eager for Gemma-2, whatever this device picks
    rows = [("gemma2-2b bf16: untuned, train, save, reload, swap TTA",
             functools.partial(full_lm_path, shape2b, "bf16", dev, steps, n_rows, length, peak),
             ok_lm, None),
            (f"gemma2-2b T4 setup (fp16, {on_t4['attn_implementation']}): untuned, train, save, "
             "reload, swap TTA",
             functools.partial(full_lm_path, shape2b, on_t4["dtype"], dev, steps, n_rows, length,
                               peak, attn=on_t4["attn_implementation"]), ok_lm, None),
            ("two scoring workers on one device equal one",
             lambda: two_workers_one_gpu(shape2b, dev, length),
             lambda r: r["max_abs_diff"] < 1e-6, None)]
    shape9b, shape8b = (dict(s, **TINY) for s in (GEMMA2_9B, LLAMA3_8B)) if smoke \
        else (GEMMA2_9B, LLAMA3_8B)
    layers = (1, 2) if smoke else (2, 4)
    rows += [("gemma2-9b shape, 4-bit NF4: load, LoRA step, scoring, memory",
              lambda: quantized_path(shape9b, "4bit", dev, layers, length),
              lambda r: r["scored"], "bitsandbytes"),
             ("llama3-8b shape, 8-bit: load, LoRA step, scoring, memory",
              lambda: quantized_path(shape8b, "8bit", dev, layers, length),
              lambda r: r["scored"], "bitsandbytes")]
    return rows


def device_line(smoke: bool, peak_tflops: float | None) -> dict:
    """The device, its peak (table or --peak-tflops) and a measured bf16 matmul peak."""
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not smoke else "cpu"
    peak, source = mfu.device_peak(name, peak_tflops)
    measured = mfu.matmul_tflops("cpu", n=256, iters=2) if smoke else mfu.matmul_tflops("cuda:0")
    print(f"device {name}: peak {f'{peak:g} TFLOP/s ({source})' if peak else source}; "
          f"bf16 matmul measured {measured:.1f} TFLOP/s", flush=True)
    return {"device": name, "peak_tflops": peak, "peak_source": source,
            "matmul_bf16_tflops": round(measured, 3)}


def run_row(fn, passed, needs: str | None) -> tuple[str, dict]:
    """(status, detail) of one row: pass/FAIL, or skip when a package it needs is absent.

    The row starts from empty compile caches and FAILs on any recompile-limit hit
    (`recompile_limit_hits` in the detail): torch runs on unfused past it, so the row's own
    checks would still pass.
    """
    if needs and importlib.util.find_spec(needs) is None:
        return "skip", {"reason": f"{needs} is not installed (pip install {needs}); the "
                                  "4/8-bit rows need it"}
    compiles.reset()
    hits = compiles.limit_hits()
    try:
        detail = fn()
        ok = passed(detail)
    except Exception as err:  # a failed row is reported, the others still run
        detail, ok = {"error": f"{type(err).__name__}: {err}",
                      "trace": traceback.format_exc(limit=3)}, False
    detail["recompile_limit_hits"] = compiles.limit_hits() - hits
    return ("pass" if ok and not detail["recompile_limit_hits"] else "FAIL"), detail


def run(smoke: bool = False, out: Path = RESULTS, peak_tflops: float | None = None
        ) -> list[dict]:
    """Run every check, print the table (MFU of training and scoring), write the JSON."""
    head, results = device_line(smoke, peak_tflops), []
    for name, fn, passed, needs in checks(smoke, head["peak_tflops"]):
        t0 = time.perf_counter()
        status, detail = run_row(fn, passed, needs)
        results.append({"check": name, "status": status, "seconds": round(
            time.perf_counter() - t0, 1), **detail})
        print(f"{status:>4}  {name}  ({results[-1]['seconds']} s)", flush=True)
        if "train_mfu" in detail:
            print(f"      MFU training {mfu.percent(detail['train_mfu'])} "
                  f"({detail['train_tflops_per_s']} TFLOP/s), scoring "
                  f"{mfu.percent(detail['scoring_mfu'])} ({detail['scoring_tflops_per_s']} "
                  f"TFLOP/s); graphs compiled: scoring {detail['scoring_graphs_compiled']}, "
                  f"training {detail['training_graphs_compiled']}", flush=True)
        elif status == "skip":
            print(f"      {detail['reason']}", flush=True)
        if detail.get("recompile_limit_hits"):
            print(f"      recompile limit hit {detail['recompile_limit_hits']} time(s): later "
                  "shapes ran unfused (TORCH_LOGS=recompiles names them)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**head, "torch": torch.__version__, "smoke": smoke,
                               "checks": results, "title": "make gpu-check (the GPU path)",
                               "command": "make gpu-check", "machine": head["device"],
                               "markdown": markdown(head, results)}, indent=2) + "\n")
    return results


def markdown(head: dict, results: list[dict]) -> str:
    """The table BENCHMARKS.md shows (benchmarks.run renders results/gpu_check.json)."""
    lines = [f"Device {head['device']}, peak {head['peak_tflops']} TFLOP/s "
             f"({head['peak_source']}), bf16 matmul measured {head['matmul_bf16_tflops']} "
             "TFLOP/s.\n", "| check | status | seconds | MFU training | MFU scoring | "
             "recompile-limit hits |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['check']} | {r['status']} | {r['seconds']} | "
                     f"{mfu.percent(r.get('train_mfu')) if 'train_mfu' in r else ''} | "
                     f"{mfu.percent(r.get('scoring_mfu')) if 'scoring_mfu' in r else ''} | "
                     f"{r.get('recompile_limit_hits', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (no GPU needed)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak for MFU (default: benchmarks.mfu's "
                         "table by device name)")
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False); "
              "--smoke runs the same checks at tiny sizes on CPU", file=sys.stderr)
        return 2
    results = run(args.smoke, args.out, args.peak_tflops)
    print(f"-> {args.out}")
    return 0 if all(r["status"] != "FAIL" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
