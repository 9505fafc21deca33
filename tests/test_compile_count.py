"""flex_attention compiles per batch shape: a scoring run on the real length mix (the 1,500
shared rows at 2,048 tokens, Gemma tokenizer) must compile at most 8 graphs in all, without
hitting torch's recompile limit (past it torch runs unfused and the graph count says nothing).

The fast test traces with dynamo's `eager` backend (guards, and so recompiles, are dynamo's:
the same as with inductor, minus inductor's compile time); the slow one is the real thing on
every row. Both need the real data in ../shared and skip without it.
"""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import compiles
from benchmarks.bench_bucketing import dynamo_only, flex_gemma2, graphs_compiled, real_rows
from lmsys_pref.infer import batching, engine

MAX_COMPILES = 8
MAX_LENGTH = 2048


def sample(rows: list, n: int, longest: int = 4) -> list:
    """`n` rows spread over the length mix: the `longest` (truncated) ones and every k-th."""
    order = np.argsort([-len(r) for r in rows], kind="stable")
    step = max(1, len(rows) // (n - longest))
    picked = list(order[:longest]) + list(order[longest::step])[:n - longest]
    return [rows[i] for i in sorted(picked)]


@pytest.fixture
def eager_backend():
    """torch.compile traced by dynamo only: the compiled-graph count without inductor's time."""
    with dynamo_only():
        yield


def test_shape_policy_bounds_the_batch_shapes_of_the_real_mix(arena_dir):
    rows, _ = real_rows(str(arena_dir))
    lengths = np.array([len(r) for r in rows])
    flex = batching.FLEX_SHAPES
    plan = batching.warm_order(batching.plan_batches(lengths, 16384), lengths, 1, flex)
    shapes = [flex.of(lengths[b]) for b in plan]
    assert all(a != b for a, b in zip(*shapes[:2]))  # the 2nd compile: new rows and width
    assert min(rows for rows, _ in shapes) >= 2 and min(w for _, w in shapes) > 128
    assert all(w > lengths[b].max() for b, (_, w) in zip(plan, shapes))  # always padded
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(rows)))
    cost = batching.padding_efficiency(lengths, plan) - batching.padding_efficiency(
        lengths, plan, flex)
    assert 0 < cost < 0.005  # about one column per row


def test_flex_scoring_compiles_at_most_8_graphs_on_the_real_mix(arena_dir, eager_backend,
                                                                 one_thread):
    rows, pad_id = real_rows(str(arena_dir))
    some = sample(rows, 16)
    lengths = np.array([len(r) for r in some])
    plan = batching.plan_batches(lengths, 4096)
    # the shape hazards are there: batches without padding (truncated rows), with padding,
    # new row counts and widths, a lone row at the end
    assert (lengths[plan[0]] == MAX_LENGTH).all() and len(plan[-1]) == 1
    model = flex_gemma2()
    assert batching.compiles_per_shape(model)
    compiled, batches = graphs_compiled(model, some, pad_id, budget=4096)
    assert batches == len(plan) >= 6
    assert compiled <= MAX_COMPILES, f"{compiled} graphs for {batches} batches"
    assert compiles.limit_hits() == 0  # past the limit torch runs unfused and counts on


def test_a_lone_row_and_an_extra_column_do_not_change_the_scores(eager_backend, one_thread):
    model = flex_gemma2()
    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 500, n).tolist() for n in (40, 33, 7)]
    flex = engine.predict_ids(model, rows, pad_id=0, token_budget=40, devices="cpu",
                              progress=False)  # batches of 1 row, each scored twice
    model.config._attn_implementation = "eager"
    assert batching.shape_policy(model) == batching.Shapes()  # as planned, no extra padding
    eager = engine.predict_ids(model, rows, pad_id=0, token_budget=40, devices="cpu",
                               progress=False)
    np.testing.assert_allclose(flex, eager, atol=1e-5)


@pytest.mark.slow
def test_flex_scoring_of_all_1500_rows_compiles_at_most_8_graphs(arena_dir):
    """The real compiler (inductor) on every row: a few minutes on CPU."""
    rows, pad_id = real_rows(str(arena_dir))
    compiled, batches = graphs_compiled(flex_gemma2(), rows, pad_id)
    assert compiled <= MAX_COMPILES, f"{compiled} graphs for {batches} batches"
    assert compiles.limit_hits() == 0
