"""The paper's exploratory analysis of Arena battles, on any competition folder.

Tables (pandas) and one matplotlib figure per question: which models are used, which pairings are
most frequent, how often the top models win, how often battles are tied, and how the length of an
answer relates to winning. `notebooks/eda.ipynb` calls these and saves the figures.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data import CLASS_NAMES, find_file, load_split
from ..data.task import detect


def load_battles(data_dir: str | Path, lenient: bool = False) -> pd.DataFrame:
    """train.(csv|parquet) of `data_dir` with `label` plus answer lengths in characters
    (`len_a`, `len_b`, all turns) and `n_turns`."""
    df = load_split(find_file(data_dir, "train"), labelled=True, lenient=lenient,
                    task=detect(data_dir))
    for side in ("a", "b"):
        df[f"len_{side}"] = df[f"response_{side}"].map(lambda turns: sum(map(len, turns)))
    df["n_turns"] = df["prompt"].map(len)
    return df


def model_usage(df: pd.DataFrame) -> pd.Series:
    """Battles per model (a model counts once per side it played), most used first."""
    return pd.concat([df["model_a"], df["model_b"]]).value_counts().rename("battles")


def top_pairings(df: pd.DataFrame, n: int = 20) -> pd.Series:
    """The `n` most frequent unordered pairings ("m1 vs m2", names sorted)."""
    pairs = [" vs ".join(sorted(p)) for p in zip(df["model_a"], df["model_b"])]
    return pd.Series(pairs, dtype=object).value_counts().head(n).rename("battles")


def model_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: battles, wins, ties, losses, win_rate and tie_rate, from both sides."""
    sides = []
    for side, win in (("a", 0), ("b", 1)):
        sides.append(pd.DataFrame({"model": df[f"model_{side}"], "win": df["label"] == win,
                                   "tie": df["label"] == 2}))
    long = pd.concat(sides, ignore_index=True)
    out = long.groupby("model").agg(battles=("win", "size"), wins=("win", "sum"),
                                    ties=("tie", "sum"))
    out["losses"] = out["battles"] - out["wins"] - out["ties"]
    out["win_rate"] = out["wins"] / out["battles"]
    out["tie_rate"] = out["ties"] / out["battles"]
    return out.sort_values("battles", ascending=False)


def top_win_rates(df: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """Outcomes of the `n` most used models, sorted by win rate."""
    return model_outcomes(df).head(n).sort_values("win_rate", ascending=False)


def outcome_shares(df: pd.DataFrame) -> pd.Series:
    """Share of battles won by A, won by B and tied."""
    counts = df["label"].value_counts().reindex(range(3), fill_value=0)  # no ties: tie 0.0
    return pd.Series(counts.to_numpy() / max(len(df), 1), index=list(CLASS_NAMES), name="share")


def by_language(df: pd.DataFrame) -> pd.DataFrame | None:
    """Per `language` (the WSDM Cup's column): battles, share of the data, A wins, B wins,
    ties and the median answer length; None when the data has no language column."""
    if "language" not in df.columns:
        return None
    g = df.assign(a=df["label"] == 0, b=df["label"] == 1, tie=df["label"] == 2,
                  length=(df["len_a"] + df["len_b"]) / 2).groupby("language")
    out = pd.DataFrame({"battles": g.size(), "share": g.size() / len(df),
                        "a_wins": g["a"].mean(), "b_wins": g["b"].mean(), "tie": g["tie"].mean(),
                        "median_length": g["length"].median()})
    return out.sort_values("battles", ascending=False)


def plot_by_language(table: pd.DataFrame, top: int = 15):
    """Stacked outcome shares of the `top` languages by battles."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    table.head(top)[["a_wins", "b_wins", "tie"]].plot.bar(stacked=True, ax=ax, width=0.8)
    ax.set(ylabel="share of battles", title="Outcomes by language")
    fig.tight_layout()
    return fig


def length_win_rates(df: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Outcome shares by bucket of the answer-length difference (len_a - len_b, characters).

    Buckets are quantiles (as many as the data allows); each row holds the bucket's median
    difference, its size and the shares of A wins, B wins and ties.
    """
    diff = df["len_a"] - df["len_b"]
    bins = pd.qcut(diff.rank(method="first"), q=min(n_bins, len(df)), labels=False)
    shares = pd.crosstab(bins, df["label"], normalize="index").reindex(columns=range(3),
                                                                      fill_value=0.0)
    shares.columns = [f"{c}_wins" if c != "tie" else "tie" for c in CLASS_NAMES]
    out = pd.DataFrame({"median_diff": diff.groupby(bins).median(),
                        "rows": diff.groupby(bins).size()}).join(shares)
    return out.reset_index(drop=True)


def _barh(series: pd.Series, title: str, xlabel: str):
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(series) + 1.2))
    ax.barh(series.index[::-1].astype(str), series.to_numpy()[::-1], color="tab:blue")
    ax.set(title=title, xlabel=xlabel)
    fig.tight_layout()
    return fig


def plot_model_usage(usage: pd.Series, n: int = 30):
    """Horizontal bars of the `n` most used models."""
    return _barh(usage.head(n), f"Model usage (top {min(n, len(usage))} of {len(usage)})",
                 "battles")


def plot_top_pairings(pairs: pd.Series):
    """Horizontal bars of the most frequent pairings."""
    return _barh(pairs, "Most frequent pairings", "battles")


def plot_win_rates(outcomes: pd.DataFrame):
    """Stacked win / tie / loss shares of each model in `outcomes`."""
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(outcomes) + 1.2))
    names = outcomes.index[::-1].astype(str)
    left = np.zeros(len(outcomes))
    for col, color in (("wins", "tab:green"), ("ties", "tab:gray"), ("losses", "tab:red")):
        share = (outcomes[col] / outcomes["battles"]).to_numpy()[::-1]
        ax.barh(names, share, left=left, color=color, label=col)
        left += share
    ax.set(title="Win / tie / loss shares of the most used models", xlabel="share of battles",
           xlim=(0, 1))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.04), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def plot_tie_rates(shares: pd.Series, outcomes: pd.DataFrame):
    """Overall outcome shares, and the tie rate of each model in `outcomes`."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.25 * len(outcomes) + 2),
                                   gridspec_kw={"width_ratios": [1, 2]})
    ax1.bar(shares.index, shares.to_numpy(), color=["tab:blue", "tab:orange", "tab:gray"])
    ax1.set(title="Outcomes", ylabel="share of battles", ylim=(0, 1))
    tie = outcomes["tie_rate"].sort_values()
    ax2.barh(tie.index.astype(str), tie.to_numpy(), color="tab:gray")
    ax2.axvline(shares["tie"], color="k", ls="--", lw=1, label="overall")
    ax2.set(title="Tie rate by model", xlabel="tie rate")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_length_win_rates(table: pd.DataFrame):
    """Shares of A wins, B wins and ties against the answer-length difference."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for col, color in (("a_wins", "tab:blue"), ("b_wins", "tab:orange"), ("tie", "tab:gray")):
        ax.plot(table["median_diff"], table[col], marker="o", color=color, label=col)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(title="Longer answers win more often", xlabel="len(response_a) - len(response_b), "
           "characters (bucket median)", ylabel="share of battles", ylim=(0, 1))
    ax.set_xscale("symlog", linthresh=100)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig, out_dir: str | Path, name: str) -> Path:
    """Save `fig` as out_dir/<name>.png (the figure stays open, so a notebook still shows it)."""
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
