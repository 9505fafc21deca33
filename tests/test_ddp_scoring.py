"""DDP training scores its rows once: each rank scores its share and every rank gets all of them
(two CPU processes, gloo)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from lmsys_pref import data
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.infer import devices, predictor
from lmsys_pref.model import models
from lmsys_pref.train import loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(quirks_dir: Path):
    return data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:13]


def _rank(rank: int, world: int, port: int, quirks_dir: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        cfg = LMConfig.from_preset("tiny-llama", dtype="fp32")
        model, tok = models.build(cfg.model)  # the same seed: the same model on every rank
        scored, predict_frame = [], predictor.predict_frame

        def spy(model, tok, df, *args, **kwargs):  # the rows this rank scores
            probs, stats = predict_frame(model, tok, df, *args, **kwargs)
            scored.append(stats.rows)
            return probs, stats

        predictor.predict_frame = spy  # a forked rank: the parent's module is untouched
        probs = loop.predict(model, tok, frame(Path(quirks_dir)), cfg)
        np.save(Path(out) / f"probs{rank}.npy", probs)
        np.save(Path(out) / f"rows{rank}.npy", np.array([sum(scored)]))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_score_a_share_each_and_all_get_every_row(tmp_path, quirks_dir):
    mp.start_processes(_rank, args=(2, free_port(), str(quirks_dir), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    rows = [int(np.load(tmp_path / f"rows{r}.npy")[0]) for r in range(2)]
    assert sorted(rows) == [6, 7]  # 13 rows scored once, not 13 on each rank
    cfg = LMConfig.from_preset("tiny-llama", dtype="fp32")
    model, tok = models.build(cfg.model)
    alone = loop.predict(model, tok, frame(quirks_dir), cfg)
    for r in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"probs{r}.npy"), alone, atol=1e-6)


def test_outside_a_process_group_every_row_is_scored_here():
    seen = []
    out = devices.across_ranks(lambda idx: seen.append(idx) or np.ones((len(idx), 3)), [5, 1, 9])
    assert out.shape == (3, 3) and seen[0].tolist() == [0, 1, 2]


def test_a_failed_rank_is_named_on_every_rank(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(devices, "process_group", lambda: (0, 2))
    monkeypatch.setattr(dist, "all_gather_object", lambda parts, mine: parts.__setitem__(
        slice(None), [mine, (np.array([1]), None, "OutOfMemoryError: cuda:1")]))
    with pytest.raises(RuntimeError, match="rank 1: OutOfMemoryError"):
        devices.across_ranks(lambda idx: np.ones((len(idx), 3)), [3, 2])
