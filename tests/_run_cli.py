"""`magicvideo` with every clip's frames also saved as a float array (`<clip>.npy`), so that tests compare
the frames a run made, not their lossy mp4 encoding: `python tests/_run_cli.py generate ...` (or under
torchrun)."""

from __future__ import annotations

import sys

import numpy as np

import magicvideo.generation as generation
from magicvideo.cli import main

write_video = generation.write_video


def keep(path, frames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".npy"), frames)


def write_and_keep(path, frames, fps):
    keep(path, np.asarray(frames))
    write_video(path, frames, fps=fps)


generation.write_video = write_and_keep
if hasattr(generation, "VideoWriter"):  # the cascade writes its frames in pieces as they are made

    class KeepingWriter(generation.VideoWriter):
        def write(self, frames) -> None:
            self.kept = [*getattr(self, "kept", []), np.array(frames)]
            super().write(frames)

        def close(self) -> None:
            super().close()
            keep(self.path, np.concatenate(self.kept))

    generation.VideoWriter = KeepingWriter
sys.exit(main(sys.argv[1:]))
