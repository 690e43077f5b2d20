"""Export side of pairbert: checkpoint folder → one ONNX graph (both branches + head) → checked bundle."""

try:
    import onnx  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError(
        f"pairbert.export needs torch and onnx ({exc.name} is missing). Install: pip install "
        f"'pairbert[train]'"
    ) from exc
