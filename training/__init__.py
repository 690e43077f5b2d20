"""Training side of pairbert: the dual-order BERT model, data, the training loop. Needs `pairbert[train]`."""

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in the torch-free CI venv
    raise ImportError(
        f"pairbert.training needs torch and transformers ({exc.name} is missing). "
        "Install the training extra: pip install 'pairbert[train]'"
    ) from exc
