"""Face detection and fixed-size crops with OpenCV's bundled Haar cascade (no downloaded weights).

The frontal-face cascade ships inside ``opencv-python-headless`` 4.x
(``cv2.data.haarcascades``). Each frame keeps its largest face, grown by a
margin into a square and resized to ``size x size``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import ConfigError

CASCADE = "haarcascade_frontalface_default.xml"


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ConfigError("face detection needs OpenCV: pip install 'imo-pipeline[video]'") from None
    return cv2


def square_crop(rgb: np.ndarray, box: tuple[int, int, int, int], size: int, margin: float = 0.0) -> np.ndarray:
    """The square around ``box`` (x, y, w, h) grown by ``margin`` per side, padded at the image edges
    by replication and resized to ``(size, size, 3)``."""
    cv2 = _cv2()
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    H, W = rgb.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - W, y0 + side - H)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = rgb[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of the frame, resized to ``(size, size, 3)`` (no detection)."""
    H, W = rgb.shape[:2]
    side = min(H, W)
    return square_crop(rgb, ((W - side) // 2, (H - side) // 2, side, side), size)


class FaceCropper:
    """Largest frontal face per frame -> ``(size, size, 3)`` RGB crop, or None where no face is found.

    ``min_face`` is the smallest face side as a fraction of the frame's shorter side.
    """

    def __init__(self, size: int = 256, margin: float = 0.2, min_face: float = 0.1):
        cv2 = _cv2()
        if not hasattr(cv2, "CascadeClassifier"):
            raise ConfigError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them out); "
                              f"pip install 'opencv-python-headless<5', or turn face detection off (--no-face)")
        path = Path(cv2.data.haarcascades) / CASCADE
        self.detector = cv2.CascadeClassifier(str(path))
        if self.detector.empty():
            raise ConfigError(f"the face detector {path} could not be loaded; reinstall opencv-python-headless<5")
        self.size, self.margin, self.min_face = size, margin, min_face
        self._lock = threading.Lock()   # one detector object; calls are serialised

    def detect(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face box (x, y, w, h), or None."""
        cv2 = _cv2()
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        smallest = max(20, int(self.min_face * min(grey.shape)))
        with self._lock:
            boxes = self.detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4,
                                                   minSize=(smallest, smallest))
        if len(boxes) == 0:
            return None
        x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
        return int(x), int(y), int(w), int(h)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        box = self.detect(rgb)
        return None if box is None else square_crop(rgb, box, self.size, self.margin)
