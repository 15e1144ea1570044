"""On-device runtime of voxedge. Never imports torch; heavy packages load lazily."""

__version__ = "0.1.0"
