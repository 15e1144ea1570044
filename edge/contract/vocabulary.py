"""The reference model's vocabulary: intents, objects, and which intents name an object.

A bundle carries its own intent labels (``manifest.heads.intent_labels``); these are the reference
model's, which the simulator speaks, the trainer learns and the converter writes into its manifest.
"""

from __future__ import annotations

import itertools

INTENTS: tuple[str, ...] = (
    "stop",
    "forward",
    "backward",
    "turn_left",
    "turn_right",
    "go_to",
    "pick_up",
    "drop",
    "none",
)
INTENT_INDEX = {name: i for i, name in enumerate(INTENTS)}
NONE_INTENT = "none"  # speech that is not a command: never moves the robot
OBJECT_INTENTS = frozenset({"go_to", "pick_up"})  # intents whose target point (and object) is meaningful

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("cube", "ball", "cone")
OBJECT_TYPES: tuple[tuple[str, str], ...] = tuple(itertools.product(COLORS, SHAPES))
