"""pairbert: a dual-order BERT pair classifier, trained in torch, served by ONNX Runtime."""

__version__ = "0.1.0"
