"""What `voxedge serve` prints per heard utterance (the README's try-your-own-voice check reads it)."""

from __future__ import annotations

from edge.fusion import Decision
from edge.service.cli import decision_line


def _decision(intent="go_to", confidence=0.93, accepted=True, kind="utterance", probs=None, **kw):
    probs = probs or {"go_to": confidence, "none": 1 - confidence}
    return Decision(id=1, kind=kind, utterance_id=1, intent=intent, confidence=confidence, accepted=accepted,
                    probabilities=probs, target_xy=(0.52, 0.41), presence=0.97, attention=None,
                    latency_ms={"speech_end_to_decision": 14.2}, **kw)


def test_an_accepted_command_names_its_target_and_latency():
    assert decision_line(_decision()) == ("heard 'go_to' (93 %): acting; target x=0.52 y=0.41, in view 97 %; "
                                          "14 ms after the end of speech")


def test_below_the_threshold_it_says_what_it_almost_heard():
    line = decision_line(_decision(intent="none", confidence=0.6, accepted=False,
                                   probs={"go_to": 0.6, "none": 0.4}))
    assert line.startswith("heard 'none' (60 %): not sure enough ('go_to' 60 %)")
    line = decision_line(_decision(intent="none", confidence=0.99, accepted=False, probs={"go_to": 0.01, "none": 0.99}))
    assert line.startswith("heard 'none' (99 %): no command")


def test_tracking_updates_print_nothing():
    assert decision_line(_decision(kind="track")) is None
