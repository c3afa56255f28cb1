"""Torch-free on-robot inference: numpy + onnxruntime only (a test proves torch is never imported)."""

from stack.runtime.metadata import REQUIRED_KEYS, MetadataError, PolicyMetadata
from stack.runtime.policy import (
    ModelError, ObservationError, OnnxPolicy, PolicyOutputError, check_graph, session_options,
)

__all__ = [
    "REQUIRED_KEYS", "MetadataError", "ModelError", "ObservationError", "OnnxPolicy", "PolicyMetadata",
    "PolicyOutputError", "check_graph", "session_options",
]
