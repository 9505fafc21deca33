"""The A/B-token judge (`head: ab_tokens`, the WSDM Cup's 3rd to 5th places): a causal LM whose
scores are its own next-token logits of the answer tokens " A", " B" (and " tie" for a
three-class task) at a row's last real position, after the judging question that closes every
row (`prompt.closing`). Trained with cross-entropy on those logits, it stays a plain causal LM:
any server that returns next-token log-probabilities scores it (vLLM: `max_tokens=1`,
`logprobs`, `allowed_token_ids`), and 8-bit GPTQ or bitsandbytes apply as to any LM.

The model is the base's own `*ForCausalLM` class with one method changed: `judge_class` makes
a subclass (same name and module, so transformers treats it as the base's class) whose
`forward` returns `.logits` of shape (rows, classes), the answer tokens' logits, and with
labels their cross-entropy. So everything that takes a classifier takes it unchanged (the
engine, swap TTA, soft labels and teachers through `train.distill.loss`), and everything that
takes a causal LM still does: peft LoRA with `task_type: CAUSAL_LM` (the adapter's tensor names
are the plain model's), the Trainer's adapter-only checkpoints, `merge_and_unload`,
`save_pretrained` (config.json names the base's class). A wrapper module around the peft model
would score the same but hide the peft model from the Trainer (full-weight checkpoints) and
rename every adapter tensor.

Rows are right-padded: a row's last real token is at `attention_mask.sum(1) - 1`, and only that
position goes through the LM head (`logits_to_keep`), one row of a 262k vocabulary each.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from transformers import modeling_utils
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from ..configs.parts import PromptSpec
from . import prompt

ANSWER_WORDS = (" A", " B", " tie")  # class order: a, b, tie (the winner columns')
META_KEY = "answer_tokens"  # lmsys_pref.json: ids, words and question of a judge


def _keeps_positions_per_row() -> bool:
    """Whether this transformers keeps each row's own positions ((rows, k) `logits_to_keep`,
    its `slice_logits_to_keep`); older versions keep one set of positions for every row."""
    slicer = getattr(modeling_utils, "slice_logits_to_keep", None)
    if slicer is None:
        return False
    try:
        kept = slicer(torch.arange(6.0).view(2, 3, 1), torch.tensor([[0], [2]]))
    except (IndexError, RuntimeError, TypeError):
        return False
    return tuple(kept.shape) == (2, 1, 1) and kept.flatten().tolist() == [0.0, 5.0]


PER_ROW_POSITIONS = _keeps_positions_per_row()


class AnswerTokenError(ValueError):
    """An answer word is not one token of the tokenizer, or a saved judge's answer ids differ
    from its tokenizer's."""


def answer_ids(tokenizer, n_labels: int, words: tuple[str, ...] | None = None
               ) -> tuple[int, ...]:
    """The token ids of the first `n_labels` answer words (a, b, tie), each one token.

    Args:
        tokenizer: the model's tokenizer.
        n_labels: the task's classes (2 or 3).
        words: the answer words (None = `ANSWER_WORDS`).

    Raises:
        AnswerTokenError: a word the tokenizer splits, naming it and its tokens.
    """
    ids = []
    for word in (ANSWER_WORDS if words is None else words)[:n_labels]:
        got = list(tokenizer(word, add_special_tokens=False)["input_ids"])
        if len(got) != 1:
            raise AnswerTokenError(
                f"head ab_tokens: the answer {word!r} is {len(got)} tokens {got} in "
                f"{type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '')}); each "
                "answer must be one token (use head classifier with this tokenizer)")
        ids.append(int(got[0]))
    return tuple(ids)


def _rows_and_positions(last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(`logits_to_keep`, where each row's logits sit in the kept positions)."""
    if PER_ROW_POSITIONS:
        return last[:, None], torch.zeros_like(last)
    kept, where = torch.unique(last, return_inverse=True)  # every row's logits at each
    return kept, where


class JudgeMixin:
    """`forward` of an A/B-token judge, mixed into a transformers `*ForCausalLM` class."""

    answer_token_ids: tuple[int, ...] = ()  # set by `attach`

    @classmethod
    def from_config(cls, config, **kwargs):
        """As `AutoModelFor*.from_config` (a concrete class has only `_from_config`)."""
        return cls._from_config(config, **kwargs)

    def forward(self, input_ids=None, attention_mask=None, labels=None, use_cache=None,
                **kwargs) -> SequenceClassifierOutputWithPast:
        """Answer-token logits (rows, classes) at each row's last real position; with `labels`
        (class indices or probability rows) their cross-entropy as `loss`."""
        if not self.answer_token_ids:
            raise AnswerTokenError(f"{type(self).__name__}: no answer tokens attached "
                                   "(lmsys_pref.model.judge.attach)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        last = attention_mask.sum(1) - 1  # right padding
        kwargs.pop("logits_to_keep", None)
        keep, where = _rows_and_positions(last)
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=use_cache, logits_to_keep=keep, **kwargs)
        rows = torch.arange(len(last), device=out.logits.device)
        logits = out.logits[rows, where.to(rows.device)][:, list(self.answer_token_ids)].float()
        loss = None if labels is None else F.cross_entropy(logits, labels.to(logits.device))
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits)


@functools.cache
def _subclass(lm_class: type) -> type:
    # the base's name and module: config.json's `architectures` stays the plain class (vLLM
    # picks its model by it), and transformers' checks that read the class's module source
    # (attention kernels, weight init of "custom code") see the base's
    return type(lm_class.__name__, (JudgeMixin, lm_class),
                {"__module__": lm_class.__module__, "__qualname__": lm_class.__qualname__,
                 "__doc__": f"{lm_class.__name__} scoring as an A/B-token judge."})


def judge_class(config) -> type:
    """The judge class of a transformers model config (its `*ForCausalLM` with `JudgeMixin`).

    Raises:
        ValueError: transformers has no causal LM for the config's model type.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    try:
        lm_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise ValueError(f"head ab_tokens: {config.model_type!r} has no causal LM class in "
                         "transformers (an encoder?); use head classifier") from None
    return _subclass(lm_class)


def from_folder(model_dir, tokenizer, n_labels: int, **kwargs):
    """A full-weight judge from a plain causal LM folder (`from_pretrained` kwargs: dtype,
    quantization_config, ...), its answer ids from `tokenizer`."""
    from transformers import AutoConfig
    model = judge_class(AutoConfig.from_pretrained(model_dir)).from_pretrained(
        str(model_dir), **kwargs)
    attach(model, tokenizer, n_labels)
    return model


def base_of(model):
    """The transformers model under a peft model (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_judge(model) -> bool:
    """Whether `model` (or the model under its peft adapter) scores as an A/B-token judge."""
    return isinstance(base_of(model), JudgeMixin)


def attach(model, tokenizer, n_labels: int) -> tuple[int, ...]:
    """Give a judge its answer token ids (from `tokenizer`, `n_labels` of them); returns them."""
    ids = answer_ids(tokenizer, n_labels)
    base_of(model).answer_token_ids = ids
    return ids


def meta(model, spec: PromptSpec) -> dict:
    """What lmsys_pref.json records of a judge (`{}` for a classifier): its answer token ids,
    their words and the judging question, so plain tools can score the folder."""
    return record(base_of(model).answer_token_ids, spec) if is_judge(model) else {}


def record(ids: tuple[int, ...], spec: PromptSpec) -> dict:
    """lmsys_pref.json's entry for a judge of answer token `ids` whose rows `spec` lays out."""
    return {META_KEY: {"ids": list(ids), "words": list(ANSWER_WORDS[:len(ids)]),
                       "question": prompt.closing(spec)}}


def check_saved(model, saved: dict | None, where) -> None:
    """A reloaded judge's answer ids must be the saved ones (another tokenizer would score
    other tokens).

    Raises:
        AnswerTokenError: naming both.
    """
    if not saved or not is_judge(model):
        return
    ids = list(base_of(model).answer_token_ids)
    if ids != list(saved["ids"]):
        raise AnswerTokenError(f"{where}: saved answer token ids {saved['ids']} "
                               f"({saved.get('words')}), its tokenizer gives {ids}; load it "
                               "with the tokenizer it was trained with")

