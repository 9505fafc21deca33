"""The A/B-token judge (`head: ab_tokens`, issue 31 item 3) against the classification head, on
the planted task, through the commands a user runs.

For Gemma 3 270M and SmolLM2-135M (`planted.SMALL_RUNS`' settings, the marker where the
preset's truncation keeps text): `make planted` (512 train / 160 unseen rows, seed 0), then for
each head `make train-*` with `-p head ...`, `make predict` without and with swap TTA and
`make planted-score`. A finished run whose training fingerprint equals this config's is reused
(the runs take minutes each on a CPU); any change trains again.
"""
from __future__ import annotations

import time
from pathlib import Path

from lmsys_pref import runs
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.eval import planted
from lmsys_pref.files import jsonio
from lmsys_pref.runs import resume

from .bench_planted import lmsys, predict_both

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_ab_tokens"
PRESETS = ("gemma3-270m", "smollm2-135m")
HEADS = ("classifier", "ab_tokens")


def _finished(run: Path, preset: str, settings: dict, task: Path) -> bool:
    """Whether `run` holds this preset's finished run of these settings on this task's rows."""
    stored = run / resume.FINGERPRINT
    if not ((run / "metrics.json").is_file() and stored.is_file()):
        return False
    cfg = LMConfig.from_preset(preset, data_dir=str(task), out_dir=str(run), task="lmsys-2024",
                               **settings)
    return not resume.differing_fields(runs.load_json(stored), resume.fingerprint(cfg))


def train(preset: str, head: str, task: Path, at: str) -> dict:
    """Train one head on the planted task (or reuse its finished run); the run's figures."""
    baseline, settings = planted.SMALL_RUNS[preset]
    settings = {**settings, "head": head}
    run = WORK / f"{preset}_{head}"
    res = {"at": at, "settings": settings, "reused": _finished(run, preset, settings, task)}
    t0 = time.time()
    if not res["reused"]:  # resume false: old checkpoints must not skip the timed training
        lmsys("train", baseline, "--preset", preset, "--data-dir", str(task), "--out-dir",
               str(run), *planted.params(settings), "-p", "resume", "false")
    res["train_seconds"] = round(time.time() - t0)
    return {**res, "metrics": runs.read_metrics(run), **predict_both(run, task)}


def verdict(res: dict, preset: str) -> str:
    """How the judge compares with the classifier for one preset, with swap TTA."""
    judge, head = res[f"{preset}/ab_tokens"]["swap"], res[f"{preset}/classifier"]["swap"]
    word = "better" if judge["log_loss"] < head["log_loss"] else "worse"
    return (f"{preset}'s judge is {word} than its classifier with swap TTA (accuracy "
            f"{judge['accuracy']:.3f} vs {head['accuracy']:.3f}, log loss "
            f"{judge['log_loss']:.3f} vs {head['log_loss']:.3f})")


def markdown(res: dict) -> str:
    lines = ["| preset | head | steps | train s | unseen acc., no TTA | log loss | "
             "**with swap TTA** | log loss | val log loss | predict s (swap) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res.items():
        m = r["metrics"]
        seconds = f"{m['seconds']:.0f}" if r["reused"] else str(r["train_seconds"])
        lines.append(f"| {name.rsplit('/', 1)[0]} | `{r['settings']['head']}` | "
                     f"{m.get('steps', '?')} | {seconds} | {r['none']['accuracy']:.3f} | "
                     f"{r['none']['log_loss']:.3f} | **{r['swap']['accuracy']:.3f}** | "
                     f"{r['swap']['log_loss']:.3f} | {m['log_loss']:.3f} | "
                     f"{r['predict_seconds_swap']} |")
    lines += ["", "Read: " + "; ".join(verdict(res, p) for p in PRESETS if f"{p}/ab_tokens" in res)
              + "."]
    settings = next(iter(res.values()))["settings"]
    shared = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "head")
    lines += ["", f"Settings: `planted.SMALL_RUNS` ({shared}; each preset's own learning rate "
              "and LoRA), 512 planted training rows (80/20 holdout: the val log loss), 160 "
              "unseen rows scored by `make predict`; the marker where the preset's truncation "
              "keeps text (Gemma 3: opening the answer, SmolLM2: closing it). `ab_tokens` "
              "rows end with the judging question (`model.prompt.JUDGE_QUESTIONS[3]`, 19-20 "
              "tokens of the 96), so its texts get fewer tokens than the classifier's. Train s: "
              "wall time of `lmsys-pref train` (notebook, model load, training, scoring the "
              "holdout and the test rows) on a 2-core machine shared with other jobs: compare "
              "them loosely."]
    return "\n".join(lines) + "\n"


def run(shared: Path | None, quick: bool = False) -> dict:
    if shared is None or not (Path(shared) / "train.csv").exists():
        return {"skipped": "the real data (../shared/data/lmsys-chatbot-arena) is absent"}
    res = {}
    for preset in PRESETS[1:] if quick else PRESETS:
        at = planted.place_for(preset)
        task = WORK / f"task_{at}"
        # made afresh every time (a second): a changed shared train.csv must not reuse an old task
        planted.make(Path(shared), task, n_train=512, n_test=160, seed=0, at=at)
        for head in HEADS:
            res[f"{preset}/{head}"] = train(preset, head, task, at)
            print(f"   {preset} {head}: {res[f'{preset}/{head}']['swap']}", flush=True)
    return {"title": "A/B-token judge vs classification head on the planted task (issue 31)",
            "command": "python -m benchmarks.run --only ab_tokens (or, per preset and head: "
                       "make planted, make train-* PARAMS=\"... -p head ab_tokens\", make "
                       "predict -p tta swap, make planted-score)",
            "markdown": markdown(res), "runs": jsonio.jsonable(res)}
