"""pairbert's runtime: load a bundle and classify pairs with ONNX Runtime or OpenVINO. Never imports torch."""

from .bundle import BundleError, Manifest, read_manifest
from .devices import DeviceError
from .predictor import PairClassifier, Prediction, PredictorError
from .sessions import BackendError

__all__ = [
    "BackendError",
    "BundleError",
    "DeviceError",
    "Manifest",
    "PairClassifier",
    "Prediction",
    "PredictorError",
    "read_manifest",
]
