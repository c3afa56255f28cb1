"""Data formats: the episode dataset, a LeRobotDataset v3.0 (``episodes`` on the layout of ``lerobot_v3``).

Imports numpy and pyarrow only (no torch), so a robot-side recorder can write episodes.
"""

from stack.data.episodes import (
    ALIASES,
    AUTHORITY,
    AUTHORITY_NAMES,
    FRAME_FEATURES,
    DatasetError,
    EpisodeDataset,
    EpisodeWriter,
    compute_stats,
    window_indices,
    write_stats,
)

__all__ = [
    "ALIASES",
    "AUTHORITY",
    "AUTHORITY_NAMES",
    "FRAME_FEATURES",
    "DatasetError",
    "EpisodeDataset",
    "EpisodeWriter",
    "compute_stats",
    "window_indices",
    "write_stats",
]
