"""The dual-order BERT pair classifier.

Two independent BERT encoders read the same pair in both orders (QA: question first, AQ: answer first).
Their pooled [CLS] vectors are concatenated (2 x hidden) and a linear head gives 2 logits.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class DualOrderBertConfig(PretrainedConfig):
    model_type = "pairbert-dual-order-bert"

    def __init__(
        self, encoder: dict | None = None, num_labels: int = 2, classifier_dropout: float = 0.1, **kwargs
    ):
        super().__init__(num_labels=num_labels, **kwargs)
        self.encoder = dict(encoder) if encoder else BertConfig().to_dict()
        self.classifier_dropout = classifier_dropout

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
        self.aq_encoder = BertModel(encoder_config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(2 * encoder_config.hidden_size, config.num_labels)
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
            encoder.config._attn_implementation = implementation

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
        qa = self.qa_encoder(
            input_ids=qa_input_ids, attention_mask=qa_attention_mask, token_type_ids=qa_token_type_ids
        ).pooler_output
        aq = self.aq_encoder(
            input_ids=aq_input_ids, attention_mask=aq_attention_mask, token_type_ids=aq_token_type_ids
        ).pooler_output
        logits = self.classifier(self.dropout(torch.cat([qa, aq], dim=-1)))
        loss = self.loss_fn(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
