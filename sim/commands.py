"""The spoken command grammar: intents, objects, phrasings and distractor speech.

Every phrasing the reference model is trained on comes from here, and so do the
intent labels written into a bundle's manifest for the reference model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# The vocabulary is the model contract's (edge.contract.vocabulary); the grammar below speaks it.
from edge.contract.vocabulary import (  # noqa: F401 (re-exported for the simulator's users)
    INTENT_INDEX,
    INTENTS,
    NONE_INTENT,
    OBJECT_INTENTS,
    OBJECT_TYPES,
)

WAKE_PREFIX = "robot,"

# Phrasings per intent. "{color} {shape}" is filled from OBJECT_TYPES (every colour x shape).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "stop": ("stop", "halt", "freeze", "stop moving", "stop now"),
    "forward": ("go forward", "move forward", "drive forward", "go straight ahead"),
    "backward": ("go back", "move backward", "back up", "drive backward"),
    "turn_left": ("turn left", "rotate left", "turn to the left"),
    "turn_right": ("turn right", "rotate right", "turn to the right"),
    "go_to": (
        "go to the {color} {shape}",
        "drive to the {color} {shape}",
        "move to the {color} {shape}",
    ),
    "pick_up": ("pick up the {color} {shape}", "grab the {color} {shape}"),
    "drop": ("drop it", "put it down", "release"),
}

# Distractor speech ("none"): ordinary sentences built from parts so there are
# thousands of them, including ones that share words with commands ("the red
# car", "turn the page") so that the model must listen to the whole phrase.
_DISTRACTOR_SUBJECTS = (
    "the weather", "my sister", "the meeting", "this coffee", "the old car",
    "our neighbour", "the kitchen light", "the printer", "your phone",
    "the green door", "the blue sky", "a yellow taxi", "the red wine",
    "the train", "the window", "that song", "the garden", "my computer",
)
_DISTRACTOR_PREDICATES = (
    "is really nice today", "was late again", "needs a new battery",
    "looks a bit strange", "is on the table", "started an hour ago",
    "makes a funny noise", "was painted last week", "is too loud",
    "will be here soon", "smells wonderful", "is very expensive",
    "broke down yesterday", "is much better now", "belongs to my brother",
)
_DISTRACTOR_FIXED = (
    "hello there", "what time is it", "how are you doing", "thank you very much",
    "I think so", "let me check the schedule", "can you hear me",
    "where did I leave my keys", "see you tomorrow", "that sounds great",
    "turn the page please", "I will go home later", "it is a beautiful morning",
    "please call me back", "the ball game starts at seven", "nice to meet you",
    "we need more paper", "is anyone there", "good night", "I am so tired",
)


@dataclass(frozen=True)
class Command:
    """One spoken phrase and what it means."""

    text: str
    intent: str
    color: str | None = None
    shape: str | None = None

    @property
    def intent_index(self) -> int:
        return INTENT_INDEX[self.intent]

    @property
    def has_object(self) -> bool:
        return self.intent in OBJECT_INTENTS


def command_phrases(intent: str, *, wake_word: bool = True) -> list[Command]:
    """All phrasings of ``intent`` (with and without the "robot," prefix)."""
    if intent not in TEMPLATES:
        raise ValueError(f"unknown command intent {intent!r}; expected one of {sorted(TEMPLATES)}")
    out: list[Command] = []
    prefixes = ("", WAKE_PREFIX + " ") if wake_word else ("",)
    for template in TEMPLATES[intent]:
        if "{color}" in template:
            fills = [(c, s) for c, s in OBJECT_TYPES]
        else:
            fills = [(None, None)]
        for color, shape in fills:
            text = template.format(color=color, shape=shape) if color else template
            for prefix in prefixes:
                out.append(Command(prefix + text, intent, color, shape))
    return out


def all_command_phrases() -> list[Command]:
    """Every command phrasing of every intent except ``none``."""
    return [c for intent in TEMPLATES for c in command_phrases(intent)]


def distractor_phrases() -> list[Command]:
    """Every distractor sentence, labelled ``none``."""
    texts = list(_DISTRACTOR_FIXED)
    texts += [f"{s} {p}" for s, p in itertools.product(_DISTRACTOR_SUBJECTS, _DISTRACTOR_PREDICATES)]
    return [Command(t, NONE_INTENT) for t in texts]


def sample_command(rng: np.random.Generator, intent: str | None = None) -> Command:
    """Draw one phrase, uniformly over intents unless ``intent`` is given."""
    if intent is None:
        intent = INTENTS[int(rng.integers(len(INTENTS)))]
    pool = distractor_phrases() if intent == NONE_INTENT else command_phrases(intent)
    return pool[int(rng.integers(len(pool)))]
