"""What every face-video extractor shares: manifest video/frames -> face crops -> per-frame vectors.

An utterance's input is either ``video`` (a file with start/end, decoded with
PyAV and sampled at ``fps``) or ``frames`` (a folder of images, in name
order, taken as already sampled at ``fps`` unless ``folder_fps`` says
otherwise). At most ``max_frames`` frames per utterance (evenly spread
beyond that). With ``face`` on, each frame keeps its largest face (OpenCV
Haar cascade) cropped square to ``crop_size``; frames without a face are
left out, counted and reported as a note of the utterance (the run writes
notes beside its errors file), and an utterance without any face fails.
With ``face`` off, the centred square of each frame is used.

The store's frame rate is ``fps``; every option here is part of the
extractor config, so it is recorded in the store and re-used by ``imo predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imo_pipeline.errors import ConfigError, MediaError
from imo_pipeline.manifest import Manifest, Utterance
from imo_pipeline.media.faces import FaceCropper, center_crop
from imo_pipeline.media.video import (count_video_frames, frame_files, load_image, load_video, pick_frames)

from .base import ExtractorConfig


@dataclass
class FramesConfig(ExtractorConfig):
    fps: float = 5.0                  # frames sampled per second of video
    max_frames: int = 300             # cap per utterance (longer ones are sampled evenly)
    face: bool = True                 # detect and crop the largest face; off: centred square crop
    crop_size: int = 224              # side of the square crop fed to the encoder
    face_margin: float = 0.2          # the face box grows by this fraction per side
    folder_fps: float | None = None   # rate the images in frames folders were saved at (None: already at fps)
    frame_batch: int = 64             # frames per forward pass


class FramesInput:
    """Mixin for video extractors: ``unit`` is frames, ``frame_rate`` the sampling rate.

    Subclasses implement ``_encode(crops)``: uint8 ``(N, S, S, 3)`` -> ``(N, n_hidden, D)``.
    Every frame is encoded on its own, so batching never changes an embedding.
    """

    modality = "video"
    unit = "frames"
    default_budget = 64.0
    batching = "mask"
    config: FramesConfig

    def _setup_frames(self) -> None:
        c = self.config
        if c.fps <= 0 or c.max_frames < 1 or c.crop_size < 8 or c.frame_batch < 1:
            raise ConfigError(f"{self.family}: need fps > 0, max_frames >= 1, crop_size >= 8 and frame_batch >= 1 "
                              f"(got fps={c.fps}, max_frames={c.max_frames}, crop_size={c.crop_size}, "
                              f"frame_batch={c.frame_batch})")
        self.cropper = FaceCropper(c.crop_size, c.face_margin) if c.face else None
        self.notes: dict[str, str] = {}

    def _probe(self) -> None:
        super()._probe()
        self.frame_rate = float(self.config.fps)

    # --- input -------------------------------------------------------------------
    def media_path(self, utt: Utterance) -> str | None:
        if utt.video is not None:
            return utt.video.path
        return utt.frames

    def _source(self, utt: Utterance) -> None:
        if utt.video is None and not utt.frames:
            raise MediaError(f"utterance {utt.id!r} has neither 'video' nor 'frames' in the manifest")

    def measure(self, utt: Utterance, manifest: Manifest) -> float:
        self._source(utt)
        c = self.config
        if utt.video is not None:
            v = utt.video
            return float(count_video_frames(manifest.resolve(v.path), v.start, v.end, c.fps, c.max_frames))
        return float(len(pick_frames(len(frame_files(manifest.resolve(utt.frames))), c.folder_fps, c.fps,
                                     c.max_frames)))

    def _frames(self, utt: Utterance, manifest: Manifest) -> list[np.ndarray]:
        c = self.config
        if utt.video is not None:
            v = utt.video
            return load_video(manifest.resolve(v.path), v.start, v.end, c.fps, c.max_frames)
        files = frame_files(manifest.resolve(utt.frames))
        return [load_image(files[i]) for i in pick_frames(len(files), c.folder_fps, c.fps, c.max_frames)]

    def crops(self, frames: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """Square crops ``(N, S, S, 3)`` uint8 of the frames with a face (all frames with ``face`` off),
        and how many frames had no face."""
        if self.cropper is None:
            return np.stack([center_crop(f, self.config.crop_size) for f in frames]), 0
        found = [self.cropper(f) for f in frames]
        kept = [x for x in found if x is not None]
        size = self.config.crop_size
        return (np.stack(kept) if kept else np.zeros((0, size, size, 3), np.uint8)), len(found) - len(kept)

    def load(self, utt: Utterance, manifest: Manifest) -> np.ndarray:
        self._source(utt)
        frames = self._frames(utt, manifest)
        crops, missing = self.crops(frames)
        where = manifest.resolve(utt.video.path if utt.video is not None else utt.frames)
        if len(crops) == 0:
            raise MediaError(f"{where}: no face found in any of the {len(frames)} sampled frames; check the video, "
                             f"or extract with face detection off")
        if missing:
            self.notes[utt.id] = f"{missing} of {len(frames)} sampled frames had no face and were left out ({where})"
        return crops

    def dummy(self, size: float) -> np.ndarray:
        rng = np.random.default_rng(0)
        n = max(1, int(2 * size))
        return rng.integers(0, 256, (n, self.config.crop_size, self.config.crop_size, 3), dtype=np.uint8)

    # --- model -------------------------------------------------------------------
    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        allc = np.concatenate(batch)                                             # (N, S, S, 3)
        step = self.config.frame_batch
        out = torch.cat([self._encode(allc[i:i + step]) for i in range(0, len(allc), step)])  # (N, n_hidden, D)
        return list(torch.split(out, [len(x) for x in batch]))
