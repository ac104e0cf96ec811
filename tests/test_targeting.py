"""Room name and dispatch metadata -> the agent a job is for."""

from __future__ import annotations

import json

import pytest

from agent.admission.targeting import (
    DEFAULT_ROOM_NAME_PATTERN,
    JobTarget,
    JobTargetError,
    resolve_target,
    room_name_for,
)

AGENT = "00000000000000000000010000agents"
OTHER = "j574mjr7b92e4twdzac0000000000000"


@pytest.mark.parametrize("room", [f"agent-{AGENT}", f"agent-{AGENT}--call-42", f"agent-{AGENT}--2026.11.28_x"])
def test_convention_room_names_name_the_agent(room: str) -> None:
    assert resolve_target(room, "") == JobTarget(AGENT, None, "room")


@pytest.mark.parametrize(
    "room",
    ["", "lobby", f"agent-{AGENT.upper()}", f"agent-{AGENT}/x", f"agent-{AGENT}--", "agent-short", f"x-agent-{AGENT}"],
)
def test_rooms_that_name_no_agent_are_refused_with_the_reason(room: str) -> None:
    with pytest.raises(JobTargetError, match="does not name an agent"):
        resolve_target(room, "")


def test_dispatch_metadata_wins_over_the_room_name_and_carries_the_hint() -> None:
    metadata = json.dumps({"agentId": OTHER, "updatedAt": 1736845200000})
    assert resolve_target(f"agent-{AGENT}", metadata) == JobTarget(OTHER, 1736845200000.0, "metadata")
    assert resolve_target("any-room-at-all", json.dumps({"agentId": OTHER})) == JobTarget(OTHER, None, "metadata")


@pytest.mark.parametrize("metadata", ["not json", "[1]", json.dumps({"campaign": "x"}), "  "])
def test_metadata_without_an_agent_falls_back_to_the_room(metadata: str) -> None:
    assert resolve_target(room_name_for(AGENT, "c1"), metadata).source == "room"


@pytest.mark.parametrize(
    "metadata",
    [
        json.dumps({"agentId": "../../etc"}),
        json.dumps({"agentId": 7}),
        json.dumps({"agentId": AGENT, "updatedAt": "x"}),
    ],
)
def test_metadata_that_names_an_agent_badly_is_refused(metadata: str) -> None:
    with pytest.raises(JobTargetError, match="dispatch metadata"):
        resolve_target(f"agent-{AGENT}", metadata)


def test_a_custom_pattern_reads_the_named_group() -> None:
    pattern = r"sip-(?P<agent_id>[0-9a-z]+)-\d+"
    assert resolve_target(f"sip-{AGENT}-15551234", "", pattern).agent_id == AGENT
    with pytest.raises(JobTargetError):
        resolve_target(f"agent-{AGENT}", "", pattern)
    assert "agent_id" in DEFAULT_ROOM_NAME_PATTERN
