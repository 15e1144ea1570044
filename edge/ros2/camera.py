"""``CameraPublisher``: the robot's camera on ROS 2, as ``sensor_msgs/CompressedImage`` (JPEG) through a Ros2Link.

A thread takes the camera's newest frame at most ``fps`` times a second (a frame already sent is not sent
again), encodes it as JPEG with OpenCV and publishes it on ``/camera/image_raw/compressed`` (image_transport's
name for the compressed image of ``/camera/image_raw``), stamped with the capture time. It never touches the
inference or actuator threads: a slow encode only makes the published stream sparser.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("voxedge.ros2")

IMAGE_TOPIC = "/camera/image_raw/compressed"
IMAGE_FPS = 5.0
JPEG_QUALITY = 80


class CameraPublisher:
    def __init__(self, link, buffer, *, topic: str = IMAGE_TOPIC, fps: float = IMAGE_FPS,
                 quality: int = JPEG_QUALITY, frame_id: str = "camera") -> None:
        if not fps > 0:
            raise ValueError(f"fps={fps!r}: use a positive frame rate")
        self.link, self.buffer, self.topic = link, buffer, topic
        self.period_s, self.quality, self.frame_id = 1.0 / fps, int(quality), frame_id
        self.sent = self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CameraPublisher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ros2-camera", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def publish_once(self, last_seq: int | None = None) -> int | None:
        """Publish the newest frame unless it is ``last_seq``; its seq (None when there is no frame yet)."""
        import cv2

        try:
            frame = self.buffer.latest()
        except Exception:  # no frame yet, or a stale one: the camera's own health check reports it
            return last_seq
        if frame.seq == last_seq:
            return last_seq
        ok, jpeg = cv2.imencode(".jpg", frame.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode the frame as JPEG")
        wall = time.time() - (time.monotonic() - frame.t)  # the capture time, on the wall clock
        self.link.publish_image(jpeg.tobytes(), wall, topic=self.topic, frame_id=self.frame_id)
        self.sent += 1
        return frame.seq

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self.period_s):
            try:
                last = self.publish_once(last)
            except Exception as exc:  # keep going: the image stream is a courtesy, never the robot's business
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning("ROS 2 camera publishing failed (%d so far): %s", self.errors, exc)
