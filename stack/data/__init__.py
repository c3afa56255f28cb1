"""Data formats: the episode schema and on-disk dataset (``episodes``); later MCAP/rosbag2 logs and LeRobot I/O.

Imports numpy only, so a robot-side recorder can write episodes without torch.
"""

from stack.data.episodes import (
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
