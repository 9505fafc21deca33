"""What bounding the batch shapes for flex_attention costs in padding, and what it saves in
compiles (`lmsys_pref.infer.batching`: FLEX_SHAPES + warm_order).

The 1,500 real rows at 2,048 tokens (Gemma tokenizer), 16,384-token budget: padding efficiency
(real / computed tokens) and distinct batch shapes of today's plan, of the flex policy the engine
uses, and of static width buckets (multiples of 128, powers of two) that the issue proposed;
with static shapes every new (rows, width) costs 4 compiled graphs (2 masks x block mask +
kernel). Unless --quick: the graphs a flex_attention scoring run of a tiny Gemma-2 really
compiles, today's plan against the flex policy, traced by dynamo with the `eager` backend
(dynamo's guards decide the recompiles; tests/test_compile_count.py checks the same with
inductor).

    .venv/bin/python -m benchmarks.run --only bucketing [--quick]
"""
from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path

import numpy as np

from lmsys_pref.infer import batching

BUDGET = 16384
GRAPHS_PER_STATIC_SHAPE = 4  # sliding + global mask, each: create_block_mask + flex_attention


def bucketed_plan(lengths: np.ndarray, budget: int, bucket) -> tuple[list, list]:
    """(batches, their widths) when a batch is padded to `bucket(longest row)` columns."""
    order = np.argsort(-lengths, kind="stable")
    batches, widths, start = [], [], 0
    while start < len(order):
        width = int(bucket(int(lengths[order[start]])))
        size = max(1, budget // width)
        batches.append(order[start:start + size])
        widths.append(width)
        start += size
    return batches, widths


def static_row(name: str, lengths: np.ndarray, bucket) -> dict:
    batches, widths = bucketed_plan(lengths, BUDGET, bucket)
    computed = sum(len(b) * w for b, w in zip(batches, widths))
    shapes = {(len(b), w) for b, w in zip(batches, widths)}
    return {"plan": name, "padding_efficiency": float(lengths.sum() / computed),
            "shapes": len(shapes), "graphs": f"~{GRAPHS_PER_STATIC_SHAPE * len(shapes)} (static)"}


def table(lengths: np.ndarray) -> list[dict]:
    """Padding efficiency and distinct shapes of each plan."""
    today = batching.plan_batches(lengths, BUDGET)
    flex = batching.FLEX_SHAPES
    ours = batching.warm_order(today, lengths, 1, flex)
    return [
        {"plan": "today: sorted, padded to the longest row", "shapes": len(
            {(len(b), int(lengths[b].max())) for b in today}),
         "padding_efficiency": batching.padding_efficiency(lengths, today), "graphs": "-"},
        {"plan": "flex policy: +1 padding column, >= 2 rows, >= 129 columns, warm order",
         "shapes": len({flex.of(lengths[b]) for b in ours}), "graphs": "8 (dynamic)",
         "padding_efficiency": batching.padding_efficiency(lengths, ours, flex)},
        static_row("static widths: multiples of 128", lengths, lambda n: -(-n // 128) * 128),
        static_row("static widths: powers of two", lengths,
                   lambda n: 1 << max(int(n - 1).bit_length(), 7))]


@functools.lru_cache(maxsize=1)
def real_rows(arena: str) -> tuple[list[list[int]], int]:
    """The 1,500 real rows encoded as the Gemma baseline does at 2,048 tokens; the pad id."""
    from benchmarks.bench_infer import real_ids

    return real_ids(Path(arena))


def flex_gemma2():
    """tiny-gemma2 (2 layers: one sliding, one global) on flex_attention, long positions."""
    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.model import models

    preset = LMConfig.from_preset("tiny-gemma2")
    cfg = preset.replace(dtype="fp32", attn_implementation="flex_attention",
                         random_init={**preset.random_init, "max_position_embeddings": 4096})
    return models.load_base(cfg.model, models.load_tokenizer(cfg.model_id), "cpu").eval()


def graphs_compiled(model, rows, pad_id: int, budget: int = BUDGET) -> tuple[int, int]:
    """(graphs dynamo compiled, batches) of one scoring run from a clean dynamo cache."""
    from torch._dynamo.utils import counters

    from benchmarks import compiles
    from lmsys_pref.infer import engine

    compiles.reset()  # flex_attention compiled again, with the current backend
    counters.clear()
    _, stats = engine.predict_ids(model, rows, pad_id=pad_id, token_budget=budget,
                                  devices="cpu", progress=False, return_stats=True)
    return counters["stats"]["unique_graphs"], stats.batches


@contextlib.contextmanager
def dynamo_only():
    """torch.compile traced by dynamo with the eager backend (no inductor compile time)."""
    import torch

    compile_ = torch.compile
    torch.compile = lambda fn=None, mode=None, **kw: compile_(fn, **{**kw, "backend": "eager"})
    try:
        yield
    finally:
        torch.compile = compile_
        torch._dynamo.reset()


def measured_graphs(shared: Path) -> dict:
    """Graphs dynamo compiles scoring the 1,500 rows on flex_attention: today vs the policy."""
    from unittest import mock

    from lmsys_pref.infer import engine

    rows, pad_id = real_rows(str(shared))
    model = flex_gemma2()
    with dynamo_only():
        ours = graphs_compiled(model, rows, pad_id)
        with mock.patch.object(engine, "shape_policy", lambda m: batching.Shapes()):
            today = graphs_compiled(model, rows, pad_id)  # batches exactly as planned
    return {"today": {"graphs": today[0], "batches": today[1]},
            "flex_policy": {"graphs": ours[0], "batches": ours[1]}}


def run(shared: Path | None, quick: bool) -> dict:
    if shared is None:
        return {"skipped": "real data (../shared/data/lmsys-chatbot-arena) not found"}
    t0 = time.perf_counter()
    ids, _ = real_rows(str(shared))
    lengths = np.array([len(r) for r in ids])
    rows = table(lengths)
    graphs = None if quick else measured_graphs(shared)
    md = [f"The 1,500 real rows at max length 2048 (Gemma tokenizer, mean {lengths.mean():.0f} "
          f"tokens), token budget {BUDGET}. Graphs: what a flex_attention scoring run compiles "
          "(static shapes: 4 per distinct shape, estimated).\n",
          "| plan | padding efficiency | distinct batch shapes | graphs compiled |",
          "| --- | ---: | ---: | --- |"]
    md += [f"| {r['plan']} | {r['padding_efficiency']:.3f} | {r['shapes']} | {r['graphs']} |"
           for r in rows]
    if graphs:
        md += ["", f"Measured (tiny Gemma-2 on flex_attention, dynamo with the eager backend, "
               f"all 1,500 rows): today's plan compiled {graphs['today']['graphs']} graphs in "
               f"{graphs['today']['batches']} batches (torch's recompile limit of 8 per function "
               f"is hit: later shapes run unfused flex, every score matrix materialised); the "
               f"flex policy {graphs['flex_policy']['graphs']} in "
               f"{graphs['flex_policy']['batches']}."]
    md += ["", "The engine applies the flex policy only to models on flex_attention; other "
           "kernels keep today's plan. Static buckets would trade padding for shapes and still "
           "compile 4 graphs per shape."]
    return {"title": "Batch shapes for flex_attention: padding cost and compiles",
            "command": ".venv/bin/python -m benchmarks.run --only bucketing",
            "markdown": "\n".join(md), "rows": rows, "measured": graphs,
            "seconds": round(time.perf_counter() - t0, 1)}
