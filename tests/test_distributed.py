"""Two CPU processes with the gloo backend: sharded scoring gathered in order, DDP training."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from lmsys_pref.commands import distributed
from lmsys_pref.infer import batching, engine

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(seed: int = 0):
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=3, pad_token_id=0,
                      max_position_embeddings=128)
    return AutoModelForSequenceClassification.from_config(cfg)


def rows(n: int = 37, seed: int = 3) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 64, int(k)).tolist() for k in rng.integers(2, 40, n)]


class Rows(torch.utils.data.Dataset):
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def collate(batch):
    ids, mask = batching.collate([b["input_ids"] for b in batch], 0, "cpu")
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor([b["labels"] for b in batch])}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    model = tiny_model().eval()
    probs = distributed.predict_ids(model, rows(), pad_id=0, token_budget=128, progress=False)
    assert (probs is None) == (rank != 0)
    if rank == 0:
        np.save(Path(out) / "probs.npy", probs)
    # DDP training with the HF Trainer: each rank sees other rows, gradients are averaged
    from transformers import Trainer, TrainingArguments

    train_rows = rows(16, seed=10)
    labels = [int(r[0] % 3) for r in train_rows]
    args = TrainingArguments(output_dir=str(Path(out) / "trainer"), per_device_train_batch_size=4,
                             max_steps=3, learning_rate=1e-2, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True, seed=0, ddp_backend="gloo")
    trainer = Trainer(model=tiny_model().train(), args=args, train_dataset=Rows(train_rows, labels),
                      data_collator=collate)
    trainer.train()
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    np.save(Path(out) / f"weights{rank}.npy", weights.numpy())
    np.save(Path(out) / f"world{rank}.npy", np.array([trainer.args.world_size]))


def test_two_gloo_processes_score_in_order_and_train_in_ddp(tmp_path):
    # fork: the children inherit the imported torch/transformers (spawn re-imports: ~10 s)
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    want = engine.predict_ids(tiny_model().eval(), rows(), pad_id=0, devices="cpu",
                             progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), want, atol=1e-6)
    w0, w1 = np.load(tmp_path / "weights0.npy"), np.load(tmp_path / "weights1.npy")
    start = torch.cat([p.detach().flatten() for p in tiny_model().parameters()]).numpy()
    assert np.abs(w0 - start).max() > 1e-4  # it trained
    np.testing.assert_allclose(w0, w1, atol=1e-6)  # and the ranks stayed in sync (DDP)
    assert int(np.load(tmp_path / "world0.npy")[0]) == 2


def test_shard_balances_lengths_and_covers_rows():
    lengths = np.random.default_rng(0).integers(1, 2048, 1001)
    parts = [distributed.shard(lengths, r, 2) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1001))
    sums = [lengths[p].sum() for p in parts]
    assert abs(sums[0] - sums[1]) / sum(sums) < 0.01


def test_single_process_without_launcher_scores_locally(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    probs = distributed.predict_ids(tiny_model().eval(), rows(5), pad_id=0, progress=False)
    assert probs.shape == (5, 3)


def test_merge_stats():
    merged = distributed.merge_stats([
        {"rows": 3, "tokens": 30, "computed_tokens": 40, "seconds": 2.0, "devices": ["cpu"]},
        {"rows": 2, "tokens": 10, "computed_tokens": 10, "seconds": 1.0, "devices": ["cpu"]}])
    assert merged["rows"] == 5 and merged["tokens_per_s"] == 20.0
    assert merged["padding_efficiency"] == pytest.approx(0.8)


@pytest.mark.slow
def test_torchrun_predict_cli_matches_single_process(tmp_path, quirks_dir):
    """torchrun --nproc-per-node 2 -m lmsys_pref.commands.distributed predict, an XGBoost model."""
    xgb = pytest.importorskip("lmsys_pref.xgb")
    from lmsys_pref.configs.xgb import XGBConfig
    from lmsys_pref.runs import submission

    run = tmp_path / "run"
    xgb.fit(XGBConfig(data_dir=str(quirks_dir), out_dir=str(run), n_folds=0, n_estimators=10,
                      n_jobs=1))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "lmsys_pref.commands.distributed", "predict",
           "--model-dir", str(run), "--data-dir", str(quirks_dir), "--out-dir",
           str(tmp_path / "out")]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=180,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    from lmsys_pref import data
    test = data.load_split(quirks_dir / "test.csv")
    sub = submission.read(tmp_path / "out" / "submission.csv", test["id"].tolist())
    single = submission.read(run / "submission.csv")
    np.testing.assert_allclose(sub.iloc[:, 1:].to_numpy(), single.iloc[:, 1:].to_numpy(),
                               atol=1e-6)


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "lmsys_pref.commands.distributed", *args]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_torchrun_ddp_training_then_sharded_scoring(tmp_path, quirks_dir):
    """The tiny-llama preset trained by DDP over 2 gloo ranks, then scored over 2 ranks."""
    from lmsys_pref import data
    from lmsys_pref.commands import predict
    from lmsys_pref.runs import submission

    run = tmp_path / "run"
    torchrun("train", "llama", "--preset", "tiny-llama", "--data-dir", str(quirks_dir),
             "--out-dir", str(run), "-p", "max_steps", "2")
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2
    assert not (run / ".rank1").exists()
    torchrun("predict", "--model-dir", str(run), "--data-dir", str(quirks_dir), "--out-dir",
             str(tmp_path / "out"), "-p", "tta", "swap")
    test = data.load_split(quirks_dir / "test.csv")
    got = submission.read(tmp_path / "out" / "submission.csv", test["id"].tolist())
    scorer = predict.load_predictor(run, devices="cpu", progress=False)
    want = scorer.predict_proba(test, tta="swap")
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), want, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert summary["world_size"] == 2 and summary["rows"] == len(test)
