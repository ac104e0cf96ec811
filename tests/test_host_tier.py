"""The host tier on its own (services/tiers/host_owner.py, host_reader.py): bounds, versions, trust, ownership."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.records import AgentConfig
from services.tiers.host_format import HostTierError
from services.tiers.host_owner import HostTierOwner
from services.tiers.host_reader import HostTier
from tests.conftest import REPO
from tests.helpers import FakeClock

TRUST, FRESH = 10.0, 600.0


def agent(agent_id: str, version: float) -> AgentConfig:
    return AgentConfig(agent_id, "org", f"Agent {agent_id}", {"voice": "alloy"}, version)


def owner(path: Path, clock: FakeClock, *, max_entries: int = 100, max_bytes: int = 1_000_000) -> HostTierOwner:
    return HostTierOwner.open(path, max_entries=max_entries, max_bytes=max_bytes, clock=clock)


def look(tier: HostTier, agent_id: str, hint: float | None = None) -> str | None:
    found = tier.lookup(agent_id, hint, trust_seconds=TRUST, fresh_seconds=FRESH)
    return None if found is None else found.prompt


def test_a_newer_version_replaces_the_older_one(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock)
    tier.put_prompt(agent("a", 1.0), "one", clock())
    tier.put_prompt(agent("a", 2.0), "two", clock())
    tier.put_prompt(agent("a", 1.0), "one again", clock())  # late: never rolls back
    assert look(tier, "a") == "two"
    assert look(tier, "a", hint=1.0) == "two"  # an older hint gets the newer version
    newest = tier.newest("a")
    assert newest is not None and newest[0] == 2.0
    assert tier.entries == 1


def test_entries_and_bytes_are_bounded_oldest_first(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock, max_entries=3, max_bytes=2_000)
    for n in range(5):
        tier.put_prompt(agent(f"a{n}", 1.0), f"prompt {n}", clock())
    assert tier.entries == 3
    assert [look(tier, f"a{n}") for n in range(5)] == [None, None, "prompt 2", "prompt 3", "prompt 4"]
    tier.put_prompt(agent("big", 1.0), "x" * 1_500, clock())
    assert tier.value_bytes <= 2_000
    assert look(tier, "big") == "x" * 1_500
    assert look(tier, "a2") is None  # the oldest made room


def test_a_version_is_trusted_only_while_the_heartbeat_is_recent(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock)
    tier.put_prompt(agent("a", 1.0), "one", clock())
    clock.advance(TRUST + 1)
    assert look(tier, "a") is None  # the owner stopped vouching: ask like a cold process
    assert look(tier, "a", hint=1.0) == "one"  # a dispatch naming the version still hits
    tier.heartbeat(clock())
    assert look(tier, "a") == "one"


def test_a_held_version_ages_from_its_last_confirmation(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock)
    tier.put_prompt(agent("a", 1.0), "one", clock())
    clock.advance(FRESH - 1)
    tier.heartbeat(clock())  # a poll confirmed every recorded version
    clock.advance(2)
    assert look(tier, "a") == "one"
    clock.advance(FRESH)
    assert look(tier, "a") is None
    newest = tier.newest("a")
    assert newest is not None and newest[1].prompt == "one"  # still there for stale-if-error


def test_a_version_from_the_feed_points_past_the_held_prompt(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock)
    tier.put_prompt(agent("a", 1.0), "one", clock())
    tier.record_version("a", 2.0, clock())
    tier.record_version("a", 1.5, clock())  # forward only
    assert look(tier, "a") is None  # version 2 is not held: a miss, not the old prompt


def test_a_second_owner_of_one_directory_is_refused(tmp_path: Path) -> None:
    first = owner(tmp_path, FakeClock())
    with pytest.raises(HostTierError, match="owned by another"):
        owner(tmp_path, FakeClock())
    first.close()
    owner(tmp_path, FakeClock()).close()


def test_an_owner_restarted_on_the_same_directory_starts_clean(tmp_path: Path) -> None:
    clock = FakeClock()
    first = owner(tmp_path, clock)
    first.put_prompt(agent("a", 1.0), "one", clock())
    first.close()
    second = owner(tmp_path, clock)
    assert look(second, "a") is None
    assert second.newest("a") is None


def test_only_the_owner_writes(tmp_path: Path) -> None:
    tier = owner(tmp_path, FakeClock())
    reader_code = (
        "import sys; from pathlib import Path; from services.tiers.host_reader import HostTierReader\n"
        "r = HostTierReader.open(Path(sys.argv[1]))\n"
        "writes = ('put_prompt', 'put_greeting', 'record_version', 'forget_agent', 'mark_loading', 'heartbeat')\n"
        "print([name for name in writes if hasattr(r, name)] or 'refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader_code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "refused"
    tier.close()


def test_another_process_reads_what_the_owner_wrote(tmp_path: Path) -> None:
    clock = FakeClock()  # starts at the real time: the reader uses the real clock
    tier = owner(tmp_path, clock)
    tier.put_prompt(agent("a", 1.0), "shared prompt", clock())
    reader_code = (
        "import sys; from pathlib import Path; from services.tiers.host_reader import HostTierReader\n"
        "r = HostTierReader.open(Path(sys.argv[1]))\n"
        "f = r.lookup('a', None, trust_seconds=60, fresh_seconds=600)\n"
        "print(f.prompt if f else None, f.agent.name if f else None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader_code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "shared prompt Agent a"
    tier.close()


def test_a_deleted_agent_leaves_the_tier_entirely(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock)
    tier.heartbeat(clock())
    tier.put_prompt(agent("gone", 1.0), "doomed", clock())
    tier.put_prompt(agent("kept", 1.0), "stays", clock())
    tier.forget_agent("gone")
    assert look(tier, "gone") is None
    assert look(tier, "gone", hint=1.0) is None  # not even through a dispatch hint
    assert tier.newest("gone") is None  # nor for stale-if-error
    assert look(tier, "kept") == "stays"
    assert tier.entries == 1


def test_a_reader_warms_its_read_path_on_a_held_prompt_and_reports_an_empty_tier(tmp_path: Path) -> None:
    clock = FakeClock()
    tier = owner(tmp_path, clock)
    reader_code = (
        "import sys; from pathlib import Path; from services.tiers.host_reader import HostTierReader\n"
        "r = HostTierReader.open(Path(sys.argv[1]))\n"
        "print(r.warm())\n"
        "sys.stdin.readline()\n"
        "print(r.warm(), r.lookup('a', None, trust_seconds=60, fresh_seconds=600).prompt)\n"
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", reader_code, str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline().strip() == "False"  # nothing held yet
    tier.put_prompt(agent("a", 1.0), "held prompt", clock())
    tier.heartbeat(clock())
    reader.stdin.write("go\n")
    reader.stdin.flush()
    assert reader.stdout.readline().strip() == "True held prompt"  # warming consumed nothing
    assert reader.wait(30) == 0
    tier.close()
