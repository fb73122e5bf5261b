"""Video decoding with PyAV (bundles FFmpeg) and frame folders read with OpenCV.

Frames are sampled at a chosen rate: one frame at the middle of every
``1/fps`` interval of the segment. Segments that would give more than
``max_frames`` frames are sampled evenly at ``max_frames`` points instead
(a lower rate, the whole segment still covered). Frames come back as RGB
uint8 arrays ``(H, W, 3)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import MediaError
from . import regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _av():
    try:
        import av
    except ImportError:
        raise MediaError("video decoding needs PyAV: pip install 'imo-pipeline[video]'") from None
    return av


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MediaError("reading frame images needs OpenCV: pip install 'imo-pipeline[video]'") from None
    return cv2


def _why(path: Path, e: Exception) -> str:
    if not path.exists():
        return f"video file {path} does not exist; check the manifest path and --data-root"
    return f"video file {path} could not be decoded ({type(e).__name__}: {e}); re-encode it, e.g. as H.264 mp4"


def video_duration(path: str | Path) -> float:
    """Seconds of video in ``path`` from the container header (no decoding). Raises MediaError (also for a
    FIFO, device or folder given as the file)."""
    av, path = _av(), regular_file(path, "video file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"video file {path} has no video stream; point the manifest at a video")
            s = c.streams.video[0]
            if s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            if c.duration is not None:
                return c.duration / 1_000_000
            if s.frames and s.average_rate:
                return s.frames / float(s.average_rate)
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(_why(path, e)) from None
    raise MediaError(f"video file {path} does not state its duration; re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")


def sample_times(start: float, end: float, fps: float, max_frames: int) -> np.ndarray:
    """Times (s) of the frames taken from ``[start, end)``: the middle of each ``1/fps`` step, at most ``max_frames``."""
    length = max(0.0, end - start)
    n = max(1, int(math.floor(length * fps + 1e-6)))
    if n > max_frames:
        n = max_frames
    step = length / n
    return start + step * (np.arange(n) + 0.5)


def segment_bounds(duration: float, start: float, end: float | None, path: Path) -> tuple[float, float]:
    """``[start, end)`` clipped to the file; MediaError if nothing is left."""
    stop = duration if end is None else min(end, duration)
    if stop <= start:
        raise MediaError(f"video file {path}: the segment [{start}, {end}) lies outside the video "
                         f"({duration:.2f} s long); fix its start/end")
    return start, stop


def count_video_frames(path: str | Path, start: float, end: float | None, fps: float, max_frames: int) -> int:
    """How many frames :func:`load_video` will return, from the header only."""
    path = Path(path)
    lo, hi = segment_bounds(video_duration(path), start, end, path)
    return len(sample_times(lo, hi, fps, max_frames))


def load_video(path: str | Path, start: float = 0.0, end: float | None = None, fps: float = 5.0,
               max_frames: int = 300) -> list[np.ndarray]:
    """Decode the frames of ``[start, end)`` sampled at ``fps`` (see module doc); RGB ``(H, W, 3)`` uint8 each.

    Raises MediaError for a missing/unreadable or non-regular file, a segment outside it, or no decodable frame.
    """
    av, path = _av(), regular_file(path, "video file")
    lo, hi = segment_bounds(video_duration(path), start, end, path)
    times = sample_times(lo, hi, fps, max_frames)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            rate = float(s.average_rate or s.guessed_rate or 25)
            tol = 0.5 / rate          # a frame shows from its time for 1/rate s
            if lo > 0:
                c.seek(int(lo / s.time_base), stream=s, backward=True, any_frame=False)
            k = 0
            for frame in c.decode(s):
                if frame.time is None:
                    continue
                if frame.time + tol < times[k] and frame.time < hi:
                    continue
                img = frame.to_ndarray(format="rgb24")
                while k < len(times) and frame.time + tol >= times[k]:
                    frames.append(img)
                    k += 1
                if k == len(times) or frame.time >= hi:
                    break
    except Exception as e:
        raise MediaError(_why(path, e)) from None
    if not frames:
        raise MediaError(f"video file {path}: no frame could be decoded in [{lo:.2f}, {hi:.2f}); re-encode it")
    return frames


def frame_files(folder: str | Path) -> list[Path]:
    """Image files of a frames folder in name order. Raises MediaError if the folder is missing or empty,
    or if an image entry is not a regular file (a FIFO, device or folder named like an image)."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            raise MediaError(f"frames folder {folder} is not a folder; 'frames' names a folder of images "
                             f"(use 'video' for a video file)")
        raise MediaError(f"frames folder {folder} does not exist; check the manifest's 'frames' and --data-root")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"frames folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for p in files:
        regular_file(p, "frame image")
    return files


def pick_frames(n: int, folder_fps: float | None, fps: float, max_frames: int) -> list[int]:
    """Indices of the images taken from a folder of ``n``: resampled from ``folder_fps`` to ``fps``
    (all of them if ``folder_fps`` is None), then evenly thinned to ``max_frames``."""
    idx = list(range(n))
    if folder_fps and folder_fps > fps:
        times = sample_times(0.0, n / folder_fps, fps, n)
        idx = sorted({min(n - 1, int(t * folder_fps)) for t in times})
    if len(idx) > max_frames:
        idx = [idx[int((i + 0.5) * len(idx) / max_frames)] for i in range(max_frames)]
    return idx


def load_image(path: str | Path) -> np.ndarray:
    """An image file as RGB ``(H, W, 3)`` uint8. Raises MediaError if unreadable or not a regular file."""
    cv2 = _cv2()
    regular_file(path, "frame image")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"frame image {path} could not be read; replace it or remove it from the folder")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 25.0, codec: str = "mpeg4") -> Path:
    """Encode RGB frames ``(H, W, 3)`` uint8 (even sizes) as a video file with PyAV."""
    av, path = _av(), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "mpeg4":
            s.options = {"qscale": "2"}
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path
