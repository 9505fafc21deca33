"""The GPU benches' code on CPU at tiny sizes: MFU against the device's own peak (PCIe and NVL
cards apart) with attention FLOPs counted, training steps that survive step 2, the scoring
memory of the build `predict` uses, measured per row, the T4 figures taken in the T4's setup
(fp16, eager attention, its batches; projections off a T4), a recompile-limit hit failing a
bench."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import bench_lm_gpu, mfu
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.model import loading, models


@pytest.mark.parametrize("name,peak", [  # names as torch.cuda.get_device_name gives them
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835), ("NVIDIA GH200 480GB", 989),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100-PCIE-40GB", 312), ("NVIDIA A100 80GB PCIe", 312),
    ("Tesla V100-SXM2-16GB", 125), ("Tesla V100-PCIE-32GB", 112), ("NVIDIA L40S", 362),
    ("NVIDIA L40", 181), ("NVIDIA GeForce RTX 4090", 165)])
def test_a_pcie_or_nvl_card_gets_its_own_peak_not_its_familys(name, peak, monkeypatch):
    """The longest table name in the device's name wins: an H200 NVL is not an H200 SXM."""
    monkeypatch.delenv("LMSYS_PEAK_TFLOPS", raising=False)
    got, source = mfu.device_peak(name)
    assert got == peak, source


def test_device_peaks_come_from_the_table_or_the_override(monkeypatch):
    monkeypatch.delenv("LMSYS_PEAK_TFLOPS", raising=False)
    assert mfu.device_peak("NVIDIA H200 NVL")[1] == "table: NVIDIA H200 NVL as H200 NVL"
    assert mfu.device_peak("NVIDIA L4")[0] == 121
    assert mfu.device_peak("Tesla T4")[0] == 65
    assert mfu.device_peak("NVIDIA A10G")[0] is None  # not guessed from the A10
    assert mfu.device_peak("NVIDIA A10G", override=70)[0] == 70
    monkeypatch.setenv("LMSYS_PEAK_TFLOPS", "100")
    assert mfu.device_peak("NVIDIA H100 80GB HBM3")[0] == 100


def test_attention_flops_count_each_query_against_the_keys_it_sees():
    shape = {"heads": 2, "head_dim": 4, "windows": [None, 3]}
    brute = sum(4 * 2 * 4 * sum(min(q + 1, w or 10**9) for q in range(n))
                for w in (None, 3) for n in (5, 2))
    assert mfu.attention_flops([5, 2], shape) == brute
    n_params = 1000
    assert mfu.model_flops(n_params, [5, 2], shape) == 2 * n_params * 7 + brute
    assert mfu.model_flops(n_params, [5, 2], shape, training=True) == 4 * n_params * 7 + 3 * brute
    assert mfu.mfu(2e12, 1.0, 4.0) == pytest.approx(0.5) and mfu.mfu(1.0, 1.0, None) is None


def test_attention_shape_of_gemma2_has_its_sliding_layers():
    from transformers import Gemma2Config

    shape = mfu.attention_shape(Gemma2Config(**{k: v for k, v in bench_lm_gpu.GEMMA2_2B.items()
                                                 if k != "model_type"}))
    assert shape["heads"] == 8 and shape["head_dim"] == 256
    assert shape["windows"][:2] == [4096, None] and len(shape["windows"]) == 26


def test_a_matmul_peak_is_measured():
    assert mfu.matmul_tflops("cpu", torch.float32, n=64, iters=2) > 0


@pytest.fixture
def tiny():
    cfg = LMConfig.from_preset("tiny-gemma2", dtype="fp32", batch_size=2)
    model, tok = models.build(cfg.model)
    return cfg, model, tok


def test_training_bench_runs_past_its_second_step(tiny):
    cfg, model, _ = tiny
    lengths = np.array([12, 30, 7, 25, 18])
    res = bench_lm_gpu.measure_training(model, cfg, lengths, steps=2, device="cpu")
    assert res["steps"] == 2 and res["tokens_per_s"] > 0 and res["tflops_per_s"] >= 0
    assert res["mfu"] is None and res["peak_gib"] is None  # no peak and no CUDA here


def test_scoring_memory_is_the_predict_build_per_row(tiny, tmp_path, monkeypatch):
    cfg, model, tok = tiny
    models.save(model, tok, cfg, tmp_path / "model")
    events, widths = [], []

    class Peaks:
        def reset(self):
            events.append("reset")

        def read(self):
            events.append("read")
            return {"allocated_gib": len(events), "reserved_gib": 0}

    def no_training_build(*args, **kwargs):
        raise AssertionError("the training build (models.build) is not what predict scores")

    load = loading.load_for_inference

    def spy(*args, **kwargs):
        loaded = load(*args, **kwargs)
        loaded[0].register_forward_pre_hook(
            lambda mod, args, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
        return loaded

    monkeypatch.setattr(models, "build", no_training_build)
    monkeypatch.setattr(loading, "load_for_inference", spy)
    res = bench_lm_gpu.inference_memory(tmp_path / "model", "cpu", (64, 96), Peaks())
    assert widths == [64, 96] and events == ["reset", "read"] * 2
    assert res == {64: {"allocated_gib": 2, "reserved_gib": 0},
                   96: {"allocated_gib": 4, "reserved_gib": 0}}


def test_t4_scoring_memory_loads_the_t4_setup_and_batches(tiny, tmp_path, monkeypatch):
    """The '(T4: 16 GB)' figure: fp16 and eager attention (never the flex_attention this GPU
    would pick), as many rows of each width as the saved token budget holds."""
    cfg, model, tok = tiny
    models.save(model, tok, cfg, tmp_path / "model")  # saved fp32, attention auto
    loaded, shapes = [], []
    load = loading.load_for_inference

    def spy(*args, **kwargs):
        loaded.append(kwargs)
        model = load(*args, **kwargs)[0]
        model.register_forward_pre_hook(
            lambda mod, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
        return model, None, None

    class Peaks:
        def reset(self):
            pass

        def read(self):
            return {"allocated_gib": 1.0, "reserved_gib": 2.0}

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(loading, "load_for_inference", spy)
    res = bench_lm_gpu.t4_scoring_memory(tmp_path / "model", "cpu", (64, 96), Peaks(),
                                         device_name="NVIDIA H200 NVL")
    assert loaded == [{"dtype": "fp16", "attn_implementation": "eager"}]
    assert res["loaded"] == {"attn_implementation": "eager", "weights_dtype": "fp16"}
    assert cfg.token_budget == res["token_budget"] == 2048
    assert shapes == [(32, 64), (21, 96)] and res["batches"] == {64: [32, 64], 96: [21, 96]}
    assert res["projected"] is True
    text = bench_lm_gpu.t4_memory_text(res, "NVIDIA H200 NVL")
    assert "projected: measured on NVIDIA H200 NVL in the T4's setup" in text
    assert "fp16 weights and eager attention" in text and "21 x 96 tokens" in text
    assert bench_lm_gpu.t4_scoring_memory(tmp_path / "model", "cpu", (64,), Peaks(),
                                          device_name="Tesla T4")["projected"] is False


def test_a_recompile_limit_hit_fails_the_training_bench(monkeypatch):
    from benchmarks import compiles

    def two_shapes(model, cfg, *args):
        double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
        for n in (2, 3):
            double(torch.ones(n))
        return {"tokens_per_s": 1}

    monkeypatch.setattr(bench_lm_gpu, "measure_training", two_shapes)
    cfg = LMConfig.from_preset("tiny-gemma2", dtype="fp32")
    with torch._dynamo.config.patch(recompile_limit=1):
        with pytest.raises(compiles.RecompileLimitHit, match="training the gemma2 shape"):
            bench_lm_gpu._train_and_save(cfg, np.array([8]), 1, "cpu", None, None)
    with torch._dynamo.config.patch(recompile_limit=2):  # room for both shapes: no hit
        assert bench_lm_gpu._train_and_save(cfg, np.array([8]), 1, "cpu", None, None) == {
            "tokens_per_s": 1}


@pytest.mark.parametrize("device_name,projected", [("NVIDIA H200", True), ("Tesla T4", False)])
def test_the_2xt4_hours_come_from_the_t4_setup(device_name, projected, monkeypatch):
    """fp16 weights, eager attention for Gemma-2 and the T4 preset's token budget, labelled a
    projection unless scored on a T4."""
    from benchmarks import bench_infer_gpu, gpu_models

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    lengths = np.array([20, 41, 33, 60, 12])
    res = bench_infer_gpu.t4_estimate(gpu_models.TINY, lengths, 8, 256, "cpu", device_name,
                                      peak=1.0)
    assert (res["weights_dtype"], res["attn_implementation"]) == ("fp16", "eager")
    assert res["token_budget"] == 256 and res["rows"] == 8 and res["projected"] is projected
    assert res["t4x2_h"] > 0 and 0 < res["mfu_here"]
    md = "\n".join(bench_infer_gpu.t4_markdown([res], ["tiny"]))
    assert ("projected from NVIDIA H200" in md) is projected
    assert ("measured on a T4" in md) is not projected
    assert "| tiny | fp16 | eager | 256 |" in md
    assert bench_infer_gpu.t4_budget("9b") == 8192  # gemma2-9b-winner, as the kernel scores


def test_the_9b_projection_with_adaptive_tta_uses_predicts_default_fraction():
    """The 2xT4 projection's adaptive column is 1 + predict's default fraction passes, and the
    fraction that fits Kaggle's limit is the one whose hours meet it exactly."""
    from benchmarks import bench_t4_projection as t4
    from lmsys_pref.configs.predict import DEFAULT_TTA_FRACTION

    assert t4.TTA_FRACTION == DEFAULT_TTA_FRACTION
    res = t4.projection(t4.gemma2_9b(), np.array([600, 700, 3072]), 3072)
    for m, hours in res["hours"].items():
        assert res["hours_adaptive"][m] == pytest.approx((1 + DEFAULT_TTA_FRACTION) * hours)
        fits = res["fraction_in_limit"][m]
        assert 0 <= fits <= 1
        if 0 < fits < 1:
            assert hours * (1 + fits) == pytest.approx(t4.KAGGLE_LIMIT_H)
    assert res["truncated_share"] == pytest.approx(1 / 3)
