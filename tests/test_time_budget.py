"""The time budget: a fake slow device (a fake clock that each batch advances) makes the run's
length known exactly, so the projection (tokens x TTA passes x folds at the measured speed,
plus one start-up per model to come) and the early stop can be checked; no test is timed."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmsys_pref import cli, runs
from lmsys_pref.commands import predict
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.infer import budget, engine
from lmsys_pref.model import models

STARTUP = 50.0  # fake seconds to load the first model
SECONDS_PER_TOKEN = 0.01


class FakeClock:
    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class SlowDevice(torch.nn.Module):
    """A classifier whose every real token takes SECONDS_PER_TOKEN of the fake clock."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock, self.calls = clock, 0
        self.config = SimpleNamespace(pad_token_id=0)

    def forward(self, input_ids, attention_mask, **kwargs):
        self.calls += 1
        self.clock.now += SECONDS_PER_TOKEN * int(attention_mask.sum())
        return torch.zeros(len(input_ids), 3)


LENGTHS = np.linspace(100, 3000, 60).astype(int)
ROWS = [[1] * int(n) for n in LENGTHS]


def run_slow(monkeypatch, limit_h: float = 0.0, models: int = 3, passes: int = 2):
    """Score ROWS (x passes) on the slow device under a budget; returns (budget, device)."""
    clock = FakeClock()
    monkeypatch.setattr(budget, "clock", clock)
    monkeypatch.setattr(budget, "MEASURE_SECONDS", 1e9)  # measure MEASURE_BATCHES batches
    b = budget.Budget(limit_h, models=models)
    clock.now += STARTUP
    device = SlowDevice(clock)
    with b.watch(device, LENGTHS, passes=passes, max_length=4096):
        engine.predict_ids(device, ROWS * passes, pad_id=0, token_budget=6000, devices="cpu",
                           progress=False)
    return b, device


def test_projection_is_rows_times_passes_times_folds_at_the_measured_speed(monkeypatch, caplog):
    caplog.set_level("INFO", logger="lmsys_pref.infer.budget")
    b, device = run_slow(monkeypatch)
    work = LENGTHS.sum() * 2 * 3 * SECONDS_PER_TOKEN
    assert b.projection["seconds"] == pytest.approx(STARTUP + work + 2 * STARTUP)
    assert b.projection["tokens_per_s"] == pytest.approx(1 / SECONDS_PER_TOKEN)
    assert b.projection["measured_batches"] == budget.MEASURE_BATCHES
    assert device.calls > budget.WARMUP_BATCHES + budget.MEASURE_BATCHES  # ran to the end
    line = next(r.getMessage() for r in caplog.records if "time budget" in r.getMessage())
    assert "60 rows x 2 TTA pass(es) x 3 model(s)" in line and "no time_limit_h" in line
    assert b.summary()["projected_h"] == pytest.approx(b.projection["seconds"] / 3600)


def test_a_run_over_the_limit_stops_at_the_projection_and_says_what_fits(monkeypatch):
    work = LENGTHS.sum() * 2 * 3 * SECONDS_PER_TOKEN
    total = 3 * STARTUP + work
    limit_h = total / 3600 / 1.5
    with pytest.raises(budget.TimeBudgetExceeded) as err:
        run_slow(monkeypatch, limit_h=limit_h)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"projected {total / 3600:.2f} h, {(total - limit_h * 3600) / 3600:.2f} h over" in msg
    no_tta = (3 * STARTUP + work / 2) / 3600
    merged = (STARTUP + work / 3) / 3600
    assert f"-p tta none ({no_tta:.2f} h)" in msg and f"merge-folds ({merged:.2f} h)" in msg
    fits = [n for n in budget.SHORTER_LENGTHS if 3 * STARTUP + np.minimum(LENGTHS, n).sum() *
            6 * SECONDS_PER_TOKEN <= budget.SAFETY * limit_h * 3600]
    assert f"-p max_length {fits[0]}, " in msg and "quantization 4bit" in msg


def test_the_stop_comes_before_the_remaining_batches(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget, "clock", clock)
    b = budget.Budget(0.001, models=1)
    device = SlowDevice(clock)  # one row per batch, about 30 s each: measured for 120 s
    with pytest.raises(budget.TimeBudgetExceeded), b.watch(device, LENGTHS, 1, 4096):
        engine.predict_ids(device, ROWS, pad_id=0, token_budget=3000, devices="cpu",
                           progress=False)
    measured = b.projection["measured_batches"]
    assert measured < budget.MEASURE_BATCHES  # MEASURE_SECONDS came first
    assert device.calls == budget.WARMUP_BATCHES + measured < len(ROWS)
    assert not device._forward_hooks  # the budget's hooks are removed


@pytest.fixture(scope="module")
def fake_kfold(tmp_path_factory):
    """An untrained tiny Llama saved as the 3 folds of a k-fold run (1 row per batch)."""
    run = tmp_path_factory.mktemp("budget") / "run"
    cfg = LMConfig.from_preset("tiny-llama", tta="swap", token_budget=96, dtype="fp32")
    model, tok = models.build(cfg.model)
    names = [f"fold_{k}" for k in range(3)]
    for name in names:
        models.save(model, tok, cfg, run / "model" / name)
    runs.write_model_meta(run / "model", "lm", cfg.to_dict(), folds=names)
    return run


def test_predict_stops_a_kfold_run_that_would_not_fit(fake_kfold, tmp_path, monkeypatch,
                                                      quirks_dir, capsys):
    monkeypatch.setattr(budget, "clock", FakeClock(step=600))  # every batch: 10 minutes
    cfg = PredictConfig(model_dir=str(fake_kfold), data_dir=str(quirks_dir),
                        out_dir=str(tmp_path / "pred"), progress=False, time_limit_h=9)
    with pytest.raises(budget.TimeBudgetExceeded, match=r"12 rows x 2 TTA pass\(es\) x 3 model"):
        predict.predict(cfg)
    assert not (tmp_path / "pred" / "submission.csv").exists()
    argv = ["predict", "--model-dir", str(fake_kfold), "--data-dir", str(quirks_dir),
            "--out-dir", str(tmp_path / "pred"), "-p", "time_limit_h", "9", "-p", "progress",
            "false"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: time budget:") and "over the limit of 9.00 h" in err[-1]
    assert "merge-folds" in err[-1]


def test_predict_within_the_limit_records_its_projection(fake_kfold, tmp_path, monkeypatch,
                                                         quirks_dir):
    monkeypatch.setattr(budget, "clock", FakeClock(step=1))
    one_model = fake_kfold / "model" / "fold_0"  # 12 rows, no TTA: 12 batches
    summary = predict.predict(PredictConfig(model_dir=str(one_model), data_dir=str(quirks_dir),
                                            out_dir=str(tmp_path / "pred"), progress=False,
                                            time_limit_h=9, tta="none"))
    assert (tmp_path / "pred" / "submission.csv").exists()
    assert 0 < summary["time_budget"]["projected_h"] < 9
    assert runs.load_json(tmp_path / "pred" / "predict.json")["time_budget"]["time_limit_h"] == 9
