"""Encoding and decoding of public frames and zone payloads (JPEG, PNG, raw BGR)."""

from __future__ import annotations

import cv2
import numpy as np

from common.errors import FormatError
from common.format import ImageCodec

ZONE_CODECS = {"png": ImageCodec.PNG, "jpeg": ImageCodec.JPEG, "raw": ImageCodec.RAW_BGR}


def encode_image(image: np.ndarray, codec: ImageCodec, jpeg_quality: int = 90) -> bytes:
    if codec == ImageCodec.RAW_BGR:
        return np.ascontiguousarray(image).tobytes()
    if codec == ImageCodec.JPEG:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {codec.name}")
    return buf.tobytes()


def decode_image(data: bytes, codec: ImageCodec, width: int, height: int) -> np.ndarray:
    """Decode and check that the result is a ``width`` x ``height`` BGR image."""
    if codec == ImageCodec.RAW_BGR:
        if len(data) != width * height * 3:
            raise FormatError(f"raw zone holds {len(data)} bytes; {width}x{height} BGR needs "
                              f"{width * height * 3}")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FormatError(f"{codec.name} image does not decode")
    if image.shape[:2] != (height, width):
        raise FormatError(f"{codec.name} image is {image.shape[1]}x{image.shape[0]}; "
                          f"expected {width}x{height}")
    return image
