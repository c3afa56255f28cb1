"""Torch-free on-robot inference: numpy + onnxruntime only (a test proves torch is never imported)."""

from stack.runtime.metadata import REQUIRED_KEYS, MetadataError, PolicyMetadata
from stack.runtime.policy import ObservationError, OnnxPolicy, PolicyOutputError, session_options

__all__ = [
    "REQUIRED_KEYS", "MetadataError", "ObservationError", "OnnxPolicy", "PolicyMetadata", "PolicyOutputError",
    "session_options",
]
