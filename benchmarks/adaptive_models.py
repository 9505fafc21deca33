"""The models `bench_adaptive` scores, trained once under runs/bench_adaptive and reused while
their settings and data are unchanged (`finished`): MiniLM and Gemma 3 270M on the planted task
(`planted.SMALL_RUNS` settings, `bench_planted`'s task) and XGBoost on 1,200 of the real rows.
"""
from __future__ import annotations

import time
from pathlib import Path

from lmsys_pref import runs, xgb
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.eval import planted
from lmsys_pref.runs import resume

from . import heldout

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_adaptive"
CPU = dict(torch_threads=2, devices="cpu")


def finished(cfg) -> bool:
    """Whether `cfg.out_dir` holds this run, finished, under the same training fingerprint
    (every training field and the content of train.csv, `resume.fingerprint`)."""
    out = Path(cfg.out_dir)
    stamp = out / resume.FINGERPRINT
    if not ((out / "metrics.json").exists() and (out / "model").is_dir() and stamp.exists()):
        return False
    return not resume.differing_fields(runs.load_json(stamp), resume.fingerprint(cfg))


def fit_or_reuse(cfg) -> dict:
    """`train.fit.fit(cfg)` unless the finished run is already there (`finished`)."""
    from lmsys_pref.train import fit

    if finished(cfg):
        print(f"   {Path(cfg.out_dir).name}: reusing the finished run", flush=True)
        return runs.read_metrics(cfg.out_dir)
    t0 = time.time()
    m = fit.fit(cfg)
    print(f"   {Path(cfg.out_dir).name}: trained in {time.time() - t0:.0f} s", flush=True)
    return m


def planted_task(shared: Path) -> Path:
    """The planted task of `bench_planted` (512 train / 160 unseen rows, seed 0, marker at the
    start: where MiniLM's and Gemma 3's right truncation keeps text)."""
    return planted.make(shared, WORK / "task_start", n_train=512, n_test=160, seed=0, at="start")


def planted_models(task: Path, quick: bool = False) -> dict[str, Path]:
    """MiniLM and Gemma 3 270M (not when `quick`) trained on the planted task at
    `planted.SMALL_RUNS` settings (the presets' `keep_best` stands aside): `bench_planted`'s runs
    (MiniLM 0.787 unseen accuracy, 0.975 with swap TTA)."""
    out = {}
    for preset, cls in (("minilm", EncoderConfig), ("gemma3-270m", LMConfig))[:1 + (not quick)]:
        _, settings = planted.SMALL_RUNS[preset]
        cfg = cls.from_preset(preset, data_dir=str(task), out_dir=str(WORK / preset),
                              **settings, **CPU, resume=False)  # never another run's checkpoints
        fit_or_reuse(cfg)
        out[preset] = Path(cfg.out_dir)
    return out


def real_split(shared: Path) -> Path:
    """1,200 of the real rows to train on, 300 held out (`heldout.write_real_split`)."""
    folder = WORK / "real_data"
    heldout.write_real_split(shared, folder)
    return folder


def real_models(folder: Path) -> dict[str, Path]:
    """XGBoost (5 prompt-grouped folds: OOF on all 1,200 rows) on the real rows."""
    cfg = XGBConfig(data_dir=str(folder), out_dir=str(WORK / "xgb_real"), n_jobs=2)
    model = Path(cfg.out_dir) / "model"
    meta = runs.read_model_meta(model) if (model / runs.MODEL_META).exists() else {}
    same = meta.get("config") == cfg.to_dict() and \
        meta.get("inputs") == resume.input_digests(cfg, test=True)  # settings and data
    if not same:
        xgb.fit(cfg)
    return {"xgb": Path(cfg.out_dir)}


def prepare(shared: Path, quick: bool = False) -> dict:
    """Every model the bench scores, trained once."""
    task, real = planted_task(shared), real_split(shared)
    return {"task": task, "real": real, **planted_models(task, quick), **real_models(real)}
