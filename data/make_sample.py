"""Write the bundled sample (competition layout) with every quirk of the real data.

The texts are synthetic (no real rows are copied): templated prompts and answers whose length,
structure and refusals drive the label the way they do in the Arena, so the baselines have
something to learn. Quirks: `[null]` turns, `null` cells, empty lists, identical answers, lone
UTF-16 surrogates, multi-turn conversations and very long answers.

    python data/make_sample.py --out data/sample --train 200 --test 50
    python data/make_sample.py --task wsdm-2025 --out data/sample-wsdm   # from data/sample

`--task wsdm-2025` writes the same rows in the WSDM Cup 2025's shape: parquet, plain-string
turns, a `winner` column (tie rows left out), hash-like text ids in train and integer ids in
test, and a `language` column (drawn, seeded: the synthetic texts are all English).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ["gpt-4-1106-preview", "gpt-4-0613", "claude-2.1", "claude-instant-1", "llama-2-70b-chat",
          "mixtral-8x7b-instruct-v0.1", "vicuna-13b", "gemini-pro", "gpt-3.5-turbo-0613",
          "mistral-medium", "yi-34b-chat", "zephyr-7b-beta"]
TOPICS = ["photosynthesis", "the French revolution", "binary search", "a haiku about rain",
          "tax brackets", "how vaccines work", "a Python sorting function", "black holes",
          "making sourdough bread", "the rules of chess", "SQL joins", "climate change"]
ASKS = ["Explain {t} simply.", "Write a short note on {t}.", "What should I know about {t}?",
        "Can you help me with {t}?", "Give me three facts about {t}."]
SENT = ["{T} is a topic many people find interesting.", "Here is the key idea behind {t}.",
        "In short, {t} can be understood step by step.", "A common mistake about {t} is "
        "oversimplifying it.", "Experts describe {t} in several ways.", "This matters because "
        "{t} affects everyday life."]
REFUSAL = "I'm sorry, but I can't help with that request."


def answer(rng: np.random.Generator, topic: str, quality: float) -> str:
    """A synthetic answer; higher quality means longer and more structured."""
    if rng.random() < 0.08 * (1 - quality):
        return REFUSAL
    n = max(1, int(rng.poisson(2 + 8 * quality)))
    sents = [rng.choice(SENT).format(t=topic, T=topic.capitalize()) for _ in range(n)]
    if quality > 0.6 and rng.random() < 0.7:
        head = f"## {topic.capitalize()}\n\n"
        return head + "\n".join(f"- **Point {i + 1}:** {s}" for i, s in enumerate(sents))
    return " ".join(sents)


def make_rows(n: int, seed: int, labelled: bool, start_id: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        turns = 1 + int(rng.random() < 0.2) + int(rng.random() < 0.05)
        topics = [str(rng.choice(TOPICS)) for _ in range(turns)]
        qa, qb = rng.random(), rng.random()
        prompt = [str(rng.choice(ASKS)).format(t=t) for t in topics]
        ra = [answer(rng, t, qa) for t in topics]
        rb = [answer(rng, t, qb) for t in topics]
        margin = qa - qb + rng.normal(0, 0.25)
        label = 2 if abs(margin) < 0.15 else (0 if margin > 0 else 1)
        rows.append({"id": start_id + i * 7919, "model_a": str(rng.choice(MODELS)),
                     "model_b": str(rng.choice(MODELS)), "prompt": prompt, "response_a": ra,
                     "response_b": rb, "label": label})
    df = pd.DataFrame(rows)
    inject_quirks(df, rng)
    for col in ("prompt", "response_a", "response_b"):
        df[col] = [v if isinstance(v, str) else json.dumps(v) for v in df[col]]
    if labelled:
        for k, col in enumerate(("winner_model_a", "winner_model_b", "winner_tie")):
            df[col] = (df["label"] == k).astype(int)
    else:
        df = df[["id", "prompt", "response_a", "response_b"]]
    return df.drop(columns=["label"], errors="ignore")


def inject_quirks(df: pd.DataFrame, rng: np.random.Generator) -> None:
    """Put each quirk of the real data into a few rows (positions are seeded)."""
    n = len(df)
    pick = iter(rng.permutation(n).tolist())
    for _ in range(max(1, n // 40)):
        df.at[next(pick), "response_a"] = [None]                      # [null] turn
        df.at[next(pick), "response_b"] = "null"                      # null cell (raw JSON)
        df.at[next(pick), "response_b"] = []                          # empty list
        i = next(pick)
        df.at[i, "response_b"] = list(df.at[i, "response_a"])         # identical answers
        # lone surrogate, as the crawler left halves of emoji: written raw as JSON text
        df.at[next(pick), "response_a"] = '["Great question! \\ud83d Here you go."]'
        i = next(pick)
        df.at[i, "response_a"] = [" ".join(["This is a very long answer."] * 800)]


LANGUAGES = ("English", "English", "English", "Russian", "Chinese")  # drawn for the WSDM sample


def write_wsdm(source: Path, out: Path, seed: int) -> None:
    """The 2024-shaped sample at `source` as a WSDM-shaped folder at `out`."""
    from lmsys_pref.data import load_split
    from lmsys_pref.data.task import TASKS
    from lmsys_pref.data.writer import write_folder

    train = load_split(source / "train.csv", labelled=True, lenient=True)
    test = load_split(source / "test.csv", labelled=False, lenient=True)
    rng = np.random.default_rng(seed)
    train["language"] = rng.choice(LANGUAGES, len(train))
    done = write_folder(train, test, out, TASKS["wsdm-2025"], hash_train_ids=True)
    print(f"wrote {done['train_rows']} train ({done['ties_dropped']} ties left out) and "
          f"{done['test_rows']} test rows to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/sample")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=("lmsys-2024", "wsdm-2025"), default="lmsys-2024")
    ap.add_argument("--source", default="data/sample", help="--task wsdm-2025: the rows to use")
    args = ap.parse_args()
    if args.task == "wsdm-2025":
        return write_wsdm(Path(args.source), Path(args.out), args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = make_rows(args.train, args.seed, True, 1000)
    test = make_rows(args.test, args.seed + 1, False, 5)
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    sub = test[["id"]].assign(winner_model_a=1 / 3, winner_model_b=1 / 3, winner_tie=1 / 3)
    sub.to_csv(out / "sample_submission.csv", index=False)
    print(f"wrote {len(train)} train and {len(test)} test rows to {out}")


if __name__ == "__main__":
    main()
