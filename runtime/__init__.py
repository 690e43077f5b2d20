"""pairbert's runtime: load a bundle and classify pairs with ONNX Runtime. Never imports torch."""

from .bundle import BundleError, Manifest, read_manifest
from .devices import DeviceError
from .predictor import PairClassifier, Prediction, PredictorError

__all__ = ["BundleError", "DeviceError", "Manifest", "PairClassifier", "Prediction", "PredictorError",
           "read_manifest"]
