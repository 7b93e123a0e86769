"""Every state transition: the allowed ones succeed and notify, every other one is refused."""

from __future__ import annotations

import itertools

import pytest

from driver.state import TRANSITIONS, CameraState, InvalidTransition, StateMachine


def machine_in(state: CameraState, seen: list) -> StateMachine:
    sm = StateMachine(lambda old, new: seen.append((old, new)))
    sm._state = state
    return sm


@pytest.mark.parametrize("old,new", [(o, n) for o, targets in TRANSITIONS.items() for n in sorted(targets)])
def test_allowed_transition(old, new):
    seen: list = []
    sm = machine_in(old, seen)
    assert sm.can(new)
    assert sm.transition(new) == old
    assert sm.state == new and seen == [(old, new)]


@pytest.mark.parametrize("old,new", [(o, n) for o, n in itertools.product(CameraState, CameraState)
                                     if o != n and n not in TRANSITIONS[o]])
def test_refused_transition(old, new):
    seen: list = []
    sm = machine_in(old, seen)
    assert not sm.can(new)
    with pytest.raises(InvalidTransition, match=f"{old.value} -> {new.value}"):
        sm.transition(new)
    assert sm.state == old and not seen


def test_same_state_is_a_quiet_no_op():
    seen: list = []
    sm = machine_in(CameraState.IDLE, seen)
    sm.transition(CameraState.IDLE)
    assert not seen


def test_every_state_is_reachable_and_can_reach_disconnected():
    reach = {CameraState.DISCONNECTED}
    frontier = [CameraState.DISCONNECTED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reach:
                reach.add(nxt)
                frontier.append(nxt)
    assert reach == set(CameraState)
    for state in CameraState:
        seen, frontier = {state}, [state]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert CameraState.DISCONNECTED in seen or state == CameraState.DISCONNECTED, state
