"""ELECTRA (Clark et al., arXiv 2003.10555): a BERT encoder trained to detect replaced tokens.

The encoder is BERT's (learned positions, post-norm; ``embedding_size`` E < H adds the projection
``embeddings_project``). Two heads, each its own released model:

* the discriminator (``with_discriminator``; HF ``ElectraForPreTraining``, bert4keras ``with_discriminator``):
  logit_i = w · act(W h_i + b) + c, act = ``hidden_act``; sigmoid(logit_i) is the probability that
  token i was replaced (bert4keras returns that probability, kexue the logit, ``logits [B, L]``);
* the generator (``with_mlm``; HF ``ElectraForMaskedLM``): BERT's MLM head with the erf GELU, back to E
  and tied to the token embedding (``logits [B, L, vocab]``). bert4keras does not build it.

No pooler (bert4keras deletes ``with_pool``), and only the encoder application (bert4keras refuses
ELECTRA as lm / unilm). HF layout: prefix ``electra.``, heads ``discriminator_predictions.*`` and
``generator_predictions.*`` / ``generator_lm_head.*``. bert4keras TF names: ``electra/...`` (BERT's
with that root), ``electra/embeddings_project``, ``discriminator_predictions/dense`` and ``dense_1``; the
generator's variables an official checkpoint also holds are not read.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kexue.layers.ffn import activation
from kexue.models.base import TransformerOutput
from kexue.models.bert import _BERT_RULES, _NORM, BERT, BERT4KERAS_OPTIONAL, EMBEDDING, MLMHead
from kexue.models.bert import bert4keras_rules as bert_tf_rules
from kexue.models.weights import Bert4kerasNames, Rule, WeightMap

# transformers' ElectraConfig defaults where they differ from BertConfig's
HF_DEFAULTS = dict(vocab_size=30522, embedding_size=128, hidden_size=256, num_attention_heads=4, intermediate_size=1024)

_RULES = [r for r in _BERT_RULES if not r.ours.startswith(("pooler", "mlm"))] + [
    Rule(r"mlm\.dense\.(weight|bias)", r"generator_predictions.dense.\1"),
    Rule(rf"mlm\.norm\.{_NORM}", r"generator_predictions.LayerNorm.\1"),
    Rule(r"mlm\.weight", "generator_lm_head.weight"),  # untied heads only
    Rule(r"mlm\.bias", "generator_lm_head.bias"),
    Rule(r"discriminator\.dense\.(weight|bias)", r"discriminator_predictions.dense.\1"),
    Rule(r"discriminator\.out\.(weight|bias)", r"discriminator_predictions.dense_prediction.\1"),
]
HEAD = "generator_lm_head.weight"


def bert4keras_rules(model: str = "electra") -> list[tuple[str, str]]:
    """kexue ELECTRA names -> bert4keras's (``electra/...``)."""
    return [(r"embeddings\.project\.weight", "electra/embeddings_project/kernel"),
            (r"embeddings\.project\.bias", "electra/embeddings_project/bias"),
            (r"discriminator\.dense\.weight", "discriminator_predictions/dense/kernel"),
            (r"discriminator\.dense\.bias", "discriminator_predictions/dense/bias"),
            (r"discriminator\.out\.weight", "discriminator_predictions/dense_1/kernel"),
            (r"discriminator\.out\.bias", "discriminator_predictions/dense_1/bias")] + bert_tf_rules(root="electra")


BERT4KERAS_NAMES = Bert4kerasNames(
    ("electra",), bert4keras_rules,
    BERT4KERAS_OPTIONAL + (r"discriminator_predictions/.*", r"generator/.*", r"generator_predictions/.*"),
    marks=(r"electra/.*", r"discriminator_predictions/.*", r"generator_predictions/.*"))


class DiscriminatorHead(nn.Module):
    """logit = w · act(W h + b) + c per token: replaced-token detection (sigmoid -> probability)."""

    def __init__(self, hidden: int, act: str):
        super().__init__()
        self.dense, self.act, self.out = nn.Linear(hidden, hidden), activation(act), nn.Linear(hidden, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.act(self.dense(h))).squeeze(-1)


class ELECTRA(BERT):
    family = "electra"
    hf_prefix = "electra."
    applications = ("encoder",)
    option_keys = BERT.option_keys + ("with_discriminator",)
    has_pooler = False
    hf_defaults = HF_DEFAULTS
    hf_head = (HEAD, EMBEDDING)

    @classmethod
    def check_options(cls, options, path=None) -> None:
        super().check_options(options, path)
        if options.with_discriminator and options.with_mlm:
            options.refuse("with_discriminator", "and with_mlm exclude each other: ELECTRA's discriminator and generator "
                           "are separate models (ElectraForPreTraining / ElectraForMaskedLM)", path)

    @property
    def hf_architectures(self) -> tuple[str, str]:
        bare = "ElectraForPreTraining" if self.options.with_discriminator else "ElectraModel"
        return bare, "ElectraForMaskedLM"

    def hf_config_fields(self) -> dict[str, Any]:
        d = super().hf_config_fields()
        c = self.config
        d["embedding_size"] = c.embedding_size or c.hidden_size  # ElectraConfig's default is 128, not hidden
        d["model_type"] = self.family if self.options.hf_compatible else f"kexue_{self.family}"
        return d

    def build(self) -> None:
        super().build()
        self.discriminator = None
        if self.options.with_discriminator:
            self.discriminator = DiscriminatorHead(self.config.hidden_size, self.config.hidden_act)
            for layer in (self.discriminator.dense, self.discriminator.out):
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    def build_mlm(self, dim: int) -> MLMHead:
        c = self.config  # transformers' ElectraGeneratorPredictions: the erf GELU whatever hidden_act says
        return MLMHead(c.hidden_size, dim, c.vocab_size, "gelu", self.norm_factory(dim), tied=c.tie_word_embeddings)

    def apply_final_layers(self, x: Tensor, cond: Tensor | None = None,
                           logits_mask: Tensor | None = None) -> TransformerOutput:
        if self.discriminator is None:
            return super().apply_final_layers(x, cond, logits_mask)
        h = x if logits_mask is None else x[logits_mask]
        return TransformerOutput(hidden=x, logits=self.discriminator(h))

    def weight_map(self) -> WeightMap:
        """``ElectraModel`` names; with a head, ``ElectraForPreTraining`` / ``ElectraForMaskedLM``'s (prefix ``electra.``)."""
        optional = []
        if self.mlm is None:
            optional.append(r"generator_.*")
        if self.discriminator is None:
            optional.append(r"discriminator_predictions\..*")
        tied = self.mlm is not None and self.mlm.weight is None
        return WeightMap(self, _RULES, prefix=self.hf_prefix, head=(r"generator_", r"discriminator_predictions\."),
                         use_prefix=self.mlm is not None or self.discriminator is not None,
                         ignore=(r".*position_ids$", r".*token_type_ids$"), optional=tuple(optional),
                         must_equal={HEAD: EMBEDDING} if tied else {})
