"""The dual-order BERT pair classifier.

Two independent BERT encoders read the same pair in both orders (QA: question first, AQ: answer first).
Each branch is pooled, the two pooled vectors are concatenated and a linear head gives 2 logits.

Pooling (`DualOrderBertConfig.pooling`, recorded in the checkpoint's config.json):
- "cls": BERT's pooler over [CLS] (tanh(W·h_cls)), the seed notebook's choice; head input 2 x hidden.
- "mean": the mean of the last hidden states over the attention mask (how sentence-transformers models such
  as all-MiniLM-L6-v2 were trained to pool); head input 2 x hidden.
- "cls+mean": both, concatenated; head input 4 x hidden.

Pairing (`DualOrderBertConfig.pairing`):
- "cross" (the notebook's): each branch reads the whole pair, question and answer attend to each other.
- "towers": each branch attends only within the FIRST segment of its order, so the QA branch encodes
  `[CLS] question [SEP]` and the AQ branch `[CLS] answer [SEP]`, exactly as a sentence-embedding model does;
  both are mean-pooled and L2-normalised, and the head reads their elementwise product (its sum is the
  cosine). With the head initialised from the zero-shot baseline's logistic fit (`init_head_from_cosine`),
  the untrained model IS the calibrated baseline, and training moves it from there. The inputs, the graph
  contract and the ONNX fusions are the same as for "cross" (only the attention mask differs).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("cls", "mean", "cls+mean")
PAIRINGS = ("cross", "towers")


class DualOrderBertConfig(PretrainedConfig):
    model_type = "pairbert-dual-order-bert"

    def __init__(
        self,
        encoder: dict | None = None,
        num_labels: int = 2,
        classifier_dropout: float = 0.1,
        pooling: str = "cls",
        single_order: bool = False,
        pairing: str = "cross",
        **kwargs,
    ):
        super().__init__(num_labels=num_labels, **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
        if pairing == "towers" and (pooling != "mean" or single_order):
            raise ValueError("pairing 'towers' mean-pools both branches: use pooling 'mean', both orders")
        self.encoder = dict(encoder) if encoder else BertConfig().to_dict()
        self.classifier_dropout = classifier_dropout
        self.pooling = pooling
        self.single_order = single_order  # ablation only: the QA branch alone (not exportable)
        self.pairing = pairing

    def encoder_config(self) -> BertConfig:
        cfg = BertConfig(**{k: v for k, v in self.encoder.items() if k not in ("architectures",)})
        cfg._attn_implementation = self._attn_implementation or "sdpa"
        return cfg


class DualOrderBertForPairClassification(PreTrainedModel):
    config_class = DualOrderBertConfig
    base_model_prefix = "pairbert"
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: DualOrderBertConfig):
        super().__init__(config)
        encoder_config = config.encoder_config()
        self.qa_encoder = BertModel(encoder_config, add_pooling_layer=True)
        self.aq_encoder = None if config.single_order else BertModel(encoder_config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.classifier_dropout)
        width = (2 if config.pooling == "cls+mean" else 1) * (1 if config.single_order else 2)
        if config.pairing == "towers":
            width = 1  # the elementwise product of the two normalised embeddings
        self.classifier = nn.Linear(width * encoder_config.hidden_size, config.num_labels)
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
        self.post_init()

    def _init_weights(self, module):
        std = self.config.encoder.get("initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def set_attention(self, implementation: str) -> None:
        """Switch both encoders' attention kernel, e.g. to "eager" for an ONNX export ORT can fuse."""
        for encoder in (self.qa_encoder, self.aq_encoder):
            if encoder is not None:
                encoder.config._attn_implementation = implementation

    def _pool(self, out, mask: torch.Tensor) -> torch.Tensor:
        pooling = self.config.pooling
        if pooling == "cls":
            return out.pooler_output
        weights = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        mean = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return mean if pooling == "mean" else torch.cat([out.pooler_output, mean], dim=-1)

    def forward(
        self,
        qa_input_ids: torch.Tensor,
        qa_attention_mask: torch.Tensor,
        qa_token_type_ids: torch.Tensor,
        aq_input_ids: torch.Tensor,
        aq_attention_mask: torch.Tensor,
        aq_token_type_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        if self.config.pairing == "towers":
            return self._towers(
                qa_input_ids,
                qa_attention_mask,
                qa_token_type_ids,
                aq_input_ids,
                aq_attention_mask,
                aq_token_type_ids,
                labels,
            )
        qa = self._pool(
            self.qa_encoder(
                input_ids=qa_input_ids, attention_mask=qa_attention_mask, token_type_ids=qa_token_type_ids
            ),
            qa_attention_mask,
        )
        if self.aq_encoder is None:  # the single-order ablation
            return self._head(qa, labels)
        aq = self._pool(
            self.aq_encoder(
                input_ids=aq_input_ids, attention_mask=aq_attention_mask, token_type_ids=aq_token_type_ids
            ),
            aq_attention_mask,
        )
        return self._head(torch.cat([qa, aq], dim=-1), labels)

    def _towers(
        self, qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types, labels
    ) -> SequenceClassifierOutput:
        """Each branch encodes only its first segment (question in QA, answer in AQ); see the module notes."""
        u, v = self.tower_embeddings(qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types)
        return self._head(u * v, labels)

    def tower_embeddings(self, qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types):
        """Towers only: the normalised question (QA branch) and answer (AQ branch) embeddings."""
        return self.tower_pools(*self.tower_states(qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types))

    def tower_states(self, qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types, hidden_states=False):
        """Towers only: (QA output, question mask, AQ output, answer mask), each branch encoding only its
        first segment; `hidden_states` keeps every layer's states in the outputs."""
        q_mask = qa_mask * (qa_types == 0).to(qa_mask.dtype)
        a_mask = aq_mask * (aq_types == 0).to(aq_mask.dtype)
        q = self.qa_encoder(
            input_ids=qa_ids,
            attention_mask=q_mask,
            token_type_ids=qa_types,
            output_hidden_states=hidden_states,
        )
        a = self.aq_encoder(
            input_ids=aq_ids,
            attention_mask=a_mask,
            token_type_ids=aq_types,
            output_hidden_states=hidden_states,
        )
        return q, q_mask, a, a_mask

    def tower_pools(self, q, q_mask, a, a_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised embeddings of `tower_states`' outputs."""
        u, v = self._pool(q, q_mask), self._pool(a, a_mask)
        return nn.functional.normalize(u, dim=-1), nn.functional.normalize(v, dim=-1)

    @torch.no_grad()
    def init_head_from_cosine(self, slope: float, intercept: float) -> None:
        """Towers only: logit(match) - logit(no match) = slope * cosine + intercept, before any training."""
        self.classifier.weight.zero_()
        self.classifier.weight[1].fill_(slope / 2)
        self.classifier.weight[0].fill_(-slope / 2)
        self.classifier.bias.copy_(torch.tensor([-intercept / 2, intercept / 2]))

    def _head(self, features: torch.Tensor, labels: torch.Tensor | None) -> SequenceClassifierOutput:
        logits = self.classifier(self.dropout(features))
        loss = self.loss_fn(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
