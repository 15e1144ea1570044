"""A camera frame as the model takes it."""

from __future__ import annotations

import numpy as np


class ImageFormatError(ValueError):
    """A frame the model cannot take; the message says what it was and what is expected."""


def prepare_image(image: np.ndarray, pre) -> np.ndarray:
    """A camera frame (H x W x 3 uint8 RGB) as the model takes it: size, colour order, layout, batch of 1.

    ``pre`` is the bundle's ``Preprocessing``. The runtime, the API, calibration and the audit log all use
    this, so a model is calibrated and gated on exactly the pixels it sees on the robot.
    """
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageFormatError(f"camera frames must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}")
    if image.shape[:2] != (pre.image_height, pre.image_width):
        # INTER_AREA: the right filter for shrinking (the usual case: 640x480 -> 160x120)
        image = cv2.resize(image, (pre.image_width, pre.image_height), interpolation=cv2.INTER_AREA)
    if pre.color_order == "BGR":
        image = image[:, :, ::-1]
    if pre.image_layout == "NCHW":
        image = image.transpose(2, 0, 1)
    return np.ascontiguousarray(image)[None]
