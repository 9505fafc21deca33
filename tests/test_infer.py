"""The inference engine: token-budget batches, N device threads, OOM halving, failures, cache."""
from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from torch import nn

from lmsys_pref.infer import batching, engine
from lmsys_pref.infer.devices import parse_devices
from lmsys_pref.model import heads

PAD = 0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rows():
    """60 rows of 3..90 random non-pad tokens; lengths repeat so sort ties are exercised."""
    rng = np.random.default_rng(0)
    return [rng.integers(1, 128, int(n)).tolist() for n in rng.choice(np.arange(3, 91, 3), 60)]


class Echo(nn.Module):
    """A fake classifier whose logits identify the row: [first token, length, 0]."""

    def __init__(self, fail_on: int | None = None, oom_above: int | None = None):
        super().__init__()
        self.fail_on, self.oom_above, self.calls, self.shapes = fail_on, oom_above, 0, []
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        if self.oom_above is not None and input_ids.numel() > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if self.fail_on is not None and (input_ids[:, 0] == self.fail_on).any():
            raise ValueError(f"boom on row starting with {self.fail_on}")
        self.shapes.append(tuple(input_ids.shape))
        n = attention_mask.sum(1).float()
        return torch.stack([input_ids[:, 0].float(), n, torch.zeros_like(n)], 1)


def logits_of(probs: np.ndarray) -> np.ndarray:
    """Undo the softmax up to a constant: log p - log p_tie."""
    return np.log(probs[:, :2]) - np.log(probs[:, 2:])


def test_plan_batches_covers_every_row_within_budget():
    lengths = np.array([5, 50, 7, 50, 300, 1, 20, 20, 20])
    batches = batching.plan_batches(lengths, token_budget=100)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert flat[0] == 4  # longest first; the 300-token row exceeds the budget and goes alone
    assert [len(b) for b in batches][0] == 1
    for b in batches[1:]:
        assert len(b) * lengths[b].max() <= 100
    maxes = [lengths[b].max() for b in batches]
    assert maxes == sorted(maxes, reverse=True)


def test_padding_efficiency_is_real_over_computed_tokens():
    lengths = [10, 8, 3, 3]
    assert batching.padding_efficiency(lengths, [[0, 1], [2, 3]]) == pytest.approx(24 / 26)
    assert batching.padding_efficiency(lengths, [[0, 1, 2, 3]]) == pytest.approx(24 / 40)
    rows = [[1] * n for n in lengths]
    _, stats = engine.predict_ids(Echo(), rows, pad_id=PAD, token_budget=20, devices="cpu",
                                 progress=False, return_stats=True)
    # budget 20: [10, 8] -> 2 x 10, [3, 3] -> 2 x 3
    assert (stats.tokens, stats.computed_tokens, stats.batches) == (24, 26, 2)
    assert stats.padding_efficiency == pytest.approx(24 / 26)
    assert stats.rows == 4 and stats.tokens_per_s > 0


def test_every_row_returned_in_input_order(rows):
    probs = engine.predict_ids(Echo(), rows, pad_id=PAD, token_budget=200, devices="cpu,cpu",
                              progress=False)
    assert probs.shape == (len(rows), 3)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-12)
    got = logits_of(probs)
    np.testing.assert_allclose(got[:, 0], [r[0] for r in rows], atol=1e-6)
    np.testing.assert_allclose(got[:, 1], [len(r) for r in rows], atol=1e-6)


def test_scores_independent_of_budget_devices_and_order(tiny_llama, rows):
    alone = np.concatenate([engine.predict_ids(tiny_llama, [r], pad_id=PAD, devices="cpu",
                                              progress=False) for r in rows])
    for budget, devices in [(64, "cpu"), (4096, "cpu"), (300, "cpu,cpu"), (100000, "cpu,cpu")]:
        probs = engine.predict_ids(tiny_llama, rows, pad_id=PAD, token_budget=budget,
                                  devices=devices, progress=False)
        np.testing.assert_allclose(probs, alone, atol=2e-6, err_msg=f"{budget} {devices}")
    perm = np.random.default_rng(1).permutation(len(rows))
    shuffled = engine.predict_ids(tiny_llama, [rows[i] for i in perm], pad_id=PAD,
                                 token_budget=500, devices="cpu,cpu", progress=False)
    np.testing.assert_allclose(shuffled, alone[perm], atol=2e-6)
    assert np.ptp(alone, axis=0).max() > 1e-3  # the model tells rows apart: the test can fail


def test_mse_objective_clips_and_renormalises():
    rows = [[5, 1, 1], [2, 1]]  # Echo logits [5, 3, 0] and [2, 2, 0]
    probs = engine.predict_ids(Echo(), rows, pad_id=PAD, objective="mse", devices="cpu",
                              progress=False)
    np.testing.assert_allclose(probs, [[1 / 2.001, 1 / 2.001, 0.001 / 2.001]] * 2, atol=1e-9)
    with pytest.raises(ValueError, match="objective"):
        heads.to_probs(np.zeros((1, 3)), "hinge")


def test_out_of_memory_halves_the_budget_and_retries(rows, caplog):
    model = Echo(oom_above=400)
    with caplog.at_level(logging.WARNING, logger="lmsys_pref.infer.engine"):
        probs, stats = engine.predict_ids(model, rows, pad_id=PAD, token_budget=3000,
                                         devices="cpu", progress=False, return_stats=True)
    want = engine.predict_ids(Echo(), rows, pad_id=PAD, devices="cpu", progress=False)
    np.testing.assert_allclose(probs, want, atol=1e-12)
    assert stats.oom_retries >= 3  # 3000 -> 1500 -> 750 -> 375
    assert "token budget halved to 375" in caplog.text
    assert max(r * w for r, w in model.shapes) <= 400


def test_out_of_memory_on_one_row_is_an_error():
    with pytest.raises(RuntimeError, match="single row of 50 tokens"):
        engine.predict_ids(Echo(oom_above=10), [[1] * 50], pad_id=PAD, devices="cpu",
                          progress=False)


def test_failing_worker_stops_the_run_with_its_error(rows):
    model = Echo(fail_on=rows[int(np.argmax([len(r) for r in rows]))][0])  # fails at once
    with pytest.raises(ValueError, match="boom") as err:
        engine.predict_ids(model, rows, pad_id=PAD, token_budget=100, devices="cpu,cpu",
                          progress=False)
    if sys.version_info >= (3, 11):  # the note names the failed device
        assert any("worker on cpu failed" in n for n in err.value.__notes__)
    n_batches = len(batching.plan_batches([len(r) for r in rows], 100))
    assert model.calls < n_batches // 2  # the other worker stopped instead of finishing


def test_cache_resumes_where_a_failed_run_stopped(rows, tmp_path):
    cache = tmp_path / "scores.npz"
    lengths = np.array([len(r) for r in rows])
    shortest = rows[int(np.argmin(lengths))][0]  # scored last: longest first
    with pytest.raises(ValueError):
        engine.predict_ids(Echo(fail_on=shortest), rows, pad_id=PAD, token_budget=100,
                          devices="cpu", progress=False, cache_path=cache)
    assert cache.exists()
    resumed = Echo()
    probs, stats = engine.predict_ids(resumed, rows, pad_id=PAD, token_budget=100, devices="cpu",
                                     progress=False, cache_path=cache, return_stats=True)
    np.testing.assert_allclose(probs, engine.predict_ids(Echo(), rows, pad_id=PAD,
                                                        devices="cpu", progress=False))
    assert 0 < stats.cached_rows < len(rows)
    assert sum(s[0] for s in resumed.shapes) == len(rows) - stats.cached_rows
    other = Echo()  # other rows: the cache is stale and ignored
    engine.predict_ids(other, rows[:-1], pad_id=PAD, devices="cpu", progress=False,
                      cache_path=cache)
    assert sum(s[0] for s in other.shapes) == len(rows) - 1


def test_parse_devices():
    assert [str(d) for d in parse_devices("cpu,cpu")] == ["cpu", "cpu"]
    assert [d.type for d in parse_devices("auto")] == (
        ["cuda"] * torch.cuda.device_count() if torch.cuda.is_available() else ["cpu"])
    with pytest.raises(ValueError, match="devices"):
        parse_devices("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not visible"):
            parse_devices("cuda:0,cuda:1")


def test_empty_row_is_an_error():
    with pytest.raises(ValueError, match="row 1 has no tokens"):
        engine.predict_ids(Echo(), [[1, 2], []], pad_id=PAD, devices="cpu", progress=False)


@pytest.mark.gpu
def test_two_gpus_match_one(tiny_llama, rows):
    one = engine.predict_ids(tiny_llama, rows, pad_id=PAD, devices="cuda:0", progress=False)
    devices = ",".join(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    many = engine.predict_ids(tiny_llama, rows, pad_id=PAD, devices=devices, progress=False)
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_no_rows_gives_an_empty_result():
    probs, stats = engine.predict_ids(Echo(), [], pad_id=PAD, devices="cpu,cpu", progress=False,
                                     return_stats=True)
    assert probs.shape == (0, 3) and stats.rows == 0 and stats.padding_efficiency == 1.0


def test_two_attention_kernels_do_not_share_cached_scores(tmp_path, quirks_dir):
    """Eager and SDPA attention round differently: a cache written by one kernel is not the
    other's (the key holds the kernel the loaded model runs)."""
    from lmsys_pref import data
    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.infer.predictor import LMPredictor
    from lmsys_pref.model import models

    cfg = LMConfig.from_preset("tiny-llama", dtype="fp32")
    model, tok = models.build(cfg.model)
    models.save(model, tok, cfg, tmp_path / "model")
    df = data.load_split(quirks_dir / "test.csv", lenient=True)

    def scored(attention: str) -> tuple[str, int]:
        scorer = LMPredictor(tmp_path / "model", devices="cpu", progress=False,
                             cache_dir=str(tmp_path / "cache"), attn_implementation=attention)
        scorer.predict_proba(df, tta="none")
        return scorer.cache_key(), scorer.stats["cached_rows"]

    (eager_key, eager_cached), (sdpa_key, sdpa_cached) = scored("eager"), scored("sdpa")
    assert eager_cached == sdpa_cached == 0  # SDPA did not take eager's scores
    assert eager_key.endswith("|eager") and sdpa_key.endswith("|sdpa")
    assert scored("sdpa")[1] == len(df)  # the same kernel again: every row from the cache
