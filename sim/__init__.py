"""Simulated world for voxedge: arena, first-person camera, spoken commands, noise.

Used by reference-model training, by the tests and by the demo, so that the
demo camera shows exactly the kind of scene the model learned from. Imports
only numpy, scipy and OpenCV; nothing heavy happens at import time.
"""
