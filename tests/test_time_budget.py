"""The time budget: a fake slow device (a fake clock that each batch advances) makes the run's
length known exactly, so the projection (tokens x TTA passes x folds at the measured speed,
plus one start-up per model to come) and the early stop can be checked; no test is timed.
Two fake devices get one fake timeline each (`DeviceClocks`): they run side by side."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmsys_pref import cli, runs
from lmsys_pref.commands import predict
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.infer import budget, engine, tta
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
    msg, hours = str(err.value), budget.duration
    assert "\n" not in msg
    assert f"projected {hours(total)}, {hours(total - limit_h * 3600)} over" in msg
    no_tta = 3 * STARTUP + work / 2
    merged = STARTUP + work / 3
    assert f"-p tta none ({hours(no_tta)})" in msg and f"merge-folds ({hours(merged)})" in msg
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


class DeviceClocks:
    """One fake timeline per device thread, so two fake devices run side by side; a device
    thread starts where the main thread stood (`base`), and the main thread, which waits for
    the devices, is at the latest time any of them reached."""

    def __init__(self):
        self.base, self.latest, self._local = 0.0, 0.0, threading.local()

    def __call__(self) -> float:
        if threading.current_thread() is threading.main_thread():
            return max(self.base, self.latest)
        if not hasattr(self._local, "now"):
            self._local.now = self.base
        return self._local.now

    def advance(self, seconds: float) -> None:
        self._local.now = self() + seconds
        self.latest = max(self.latest, self._local.now)


REAL_PER_FAKE = 1e-4  # real seconds a fake device sleeps per fake second: the shared queue then
# hands out batches as real devices of those speeds would take them


class CompilingDevice(torch.nn.Module):
    """SECONDS_PER_TOKEN per real token on its thread's timeline, plus `compile_s` on the first
    batch of every thread (a kernel compile, a cold device); `ends` holds each batch's end.
    Every device's first batch waits at `start` for the others': all devices take part."""

    def __init__(self, clocks: DeviceClocks, start: threading.Barrier, compile_s: float = 0.0):
        super().__init__()
        self.clocks, self.start, self.compile_s = clocks, start, compile_s
        self.ends, self.threads = [], set()
        self.config = SimpleNamespace(pad_token_id=0)

    def forward(self, input_ids, attention_mask, **kwargs):
        first = threading.get_ident() not in self.threads
        self.threads.add(threading.get_ident())
        if first:
            self.start.wait()
        cost = SECONDS_PER_TOKEN * int(attention_mask.sum()) + (self.compile_s if first else 0)
        time.sleep(cost * REAL_PER_FAKE)
        self.clocks.advance(cost)
        self.ends.append(self.clocks())
        return torch.zeros(len(input_ids), 3)


def watched_run(monkeypatch, rows, limit_h=0.0, models=1, devices=1, compile_s=0.0,
                token_budget=6000):
    """Score `rows` (one pass) on `devices` fake devices under a budget, after STARTUP."""
    clocks, start = DeviceClocks(), threading.Barrier(devices, timeout=60)
    monkeypatch.setattr(budget, "clock", clocks)
    monkeypatch.setattr(budget, "MEASURE_SECONDS", 1e9)
    b = budget.Budget(limit_h, models=models)
    clocks.base += STARTUP
    replicas = [CompilingDevice(clocks, start, compile_s) for _ in range(devices)]
    with b.watch(replicas, np.array([len(r) for r in rows]), passes=1, max_length=4096):
        engine.predict_ids(replicas, rows, pad_id=0, token_budget=token_budget,
                           devices=",".join(["cpu"] * devices), progress=False)
    return b, replicas


def test_each_devices_first_batch_is_warm_up_so_a_run_that_fits_is_not_stopped(monkeypatch):
    compile_s = 600.0  # each device's first batch: longer than all of its other batches
    b, replicas = watched_run(monkeypatch, ROWS * 2, devices=2, compile_s=compile_s)
    ends = [t for r in replicas for t in r.ends]
    actual = max(ends)  # the slower device's last batch
    assert all(len(r.ends) > 1 for r in replicas)  # both devices worked
    # two devices at 1 / SECONDS_PER_TOKEN each, measured on warm batches only
    assert b.projection["tokens_per_s"] == pytest.approx(2 / SECONDS_PER_TOKEN)
    assert b.projection["measured_batches"] == budget.MEASURE_BATCHES
    assert b.projection["seconds"] == pytest.approx(actual, rel=0.1)
    limit_h = 1.2 * actual / 3600  # a limit the run fits is not stopped
    fits, _ = watched_run(monkeypatch, ROWS * 2, limit_h=limit_h, devices=2,
                          compile_s=compile_s)
    assert fits.projection["seconds"] < budget.SAFETY * limit_h * 3600


def test_a_run_shorter_than_the_measurement_is_projected_at_its_end(monkeypatch, caplog):
    caplog.set_level("INFO", logger="lmsys_pref.infer.budget")
    rows = ROWS[:5]  # 5 one-row batches: 4 warm ones, fewer than MEASURE_BATCHES
    b, _ = watched_run(monkeypatch, rows, token_budget=1)
    assert b.projection["measured_batches"] == 4 < budget.MEASURE_BATCHES
    assert b.projection["tokens_per_s"] == pytest.approx(1 / SECONDS_PER_TOKEN)
    done = STARTUP + LENGTHS[:5].sum() * SECONDS_PER_TOKEN
    assert b.projection["seconds"] == pytest.approx(done)
    assert b.summary()["projected"] == budget.duration(done)
    assert "after 4 warm batches" in caplog.text
    # the same short fold of a 3-fold run over its limit stops before the other folds
    with pytest.raises(budget.TimeBudgetExceeded, match="3 model"):
        watched_run(monkeypatch, rows, limit_h=done / 3600, models=3, token_budget=1)
    done_alone, _ = watched_run(monkeypatch, rows, limit_h=done / 3600 / 2, token_budget=1)
    assert done_alone.projection["required_left"] == 0  # finished: logged, never stopped


def test_a_run_too_short_to_measure_says_so(monkeypatch, caplog):
    caplog.set_level("INFO", logger="lmsys_pref.infer.budget")
    b, replicas = watched_run(monkeypatch, ROWS[:2], limit_h=9, devices=2, token_budget=1)
    assert [len(r.ends) for r in replicas] == [1, 1]  # one batch per device: both warm-up
    assert b.projection is None
    summary = b.summary()
    assert summary["projected_h"] is None and summary["measured_batches"] == 0
    assert summary["projected"].startswith("too short to project: 2 batch(es)")
    assert "too short to project" in caplog.text


def test_predict_json_says_a_run_was_too_short_to_project(fake_kfold, tmp_path, quirks_dir):
    summary = predict.predict(PredictConfig(
        model_dir=str(fake_kfold / "model" / "fold_0"), data_dir=str(quirks_dir),
        out_dir=str(tmp_path / "pred"), progress=False, time_limit_h=9, tta="none",
        token_budget=100_000, devices="cpu,cpu"))  # the 12 rows in one batch
    saved = runs.load_json(tmp_path / "pred" / "predict.json")["time_budget"]
    assert summary["time_budget"] == saved
    assert saved["projected_h"] is None and saved["projected"].startswith("too short")
    assert saved["time_limit"] == "9.00 h"


def test_limits_and_projections_read_in_the_unit_that_fits():
    assert budget.duration(9 * 3600) == "9.00 h"
    assert budget.duration(0.1 * 3600) == "6.0 min"
    assert budget.duration(42) == "42.0 s"
    b = budget.Budget(0.01)
    b.plan = budget.Plan(LENGTHS, 1, 1, 4096)
    b.projection = {"seconds": 20.0, "required_seconds": 20.0, "tokens_per_s": 100.0,
                    "rows_per_s": 1.0, "measured_batches": 3, "rows": 60, "passes": 1,
                    "models": 1, "optional_passes": 0.0, "tokens": 1e4}
    line = b.describe()
    assert "projected 20.0 s" in line and "the limit of 36.0 s" in line and "0.00 h" not in line


def test_the_adaptive_swap_pass_takes_only_the_time_left(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget, "clock", clock)
    one_pass = LENGTHS.sum() * SECONDS_PER_TOKEN
    limit_s = (STARTUP + 1.5 * one_pass) / budget.SAFETY  # time for about half a swap pass
    b = budget.Budget(limit_s / 3600)
    clock.now += STARTUP
    device = SlowDevice(clock)  # every row equally unsure: the least certain in row order
    with b.watch(device, LENGTHS, passes=1, max_length=4096, optional_passes=1.0):
        _, stats = tta.score(device, ROWS, ROWS, mode="adaptive", fraction=1.0, budget=b,
                             devices="cpu", pad_id=0, token_budget=6000, progress=False)
    second = stats.adaptive
    assert second.stopped_by == "time" and 0 < len(second.rows) < second.target_rows
    assert second.rows.tolist() == list(range(len(second.rows)))
    assert clock.now <= budget.SAFETY * limit_s  # the run ended within the limit ...
    next_row = LENGTHS[len(second.rows)] * SECONDS_PER_TOKEN
    assert clock.now + next_row > budget.SAFETY * limit_s  # ... and one more row would not
    assert "adaptive swap pass on up to 100% of the rows" in b.describe()


def test_each_fold_makes_its_own_adaptive_pass(fake_kfold, tmp_path, quirks_dir):
    summary = predict.predict(PredictConfig(
        model_dir=str(fake_kfold), data_dir=str(quirks_dir), out_dir=str(tmp_path / "pred"),
        progress=False, tta="adaptive", tta_fraction=0.25, time_limit_h=9))
    folds = summary["adaptive"]["folds"]
    assert len(folds) == 3 and all(f["second_pass_rows"] == 3 for f in folds)  # ceil(12 / 4)
    assert all(f["stopped_by"] == "fraction" and len(f["second_pass_ids"]) == 3 for f in folds)
    assert summary["scored_rows"] == 12 + 3  # the last fold's passes
