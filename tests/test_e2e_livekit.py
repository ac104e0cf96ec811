"""End to end: a real livekit-server, the local Convex backend, and the worker started by
its real command (``python -m agent start``) with the fake LLM behind the model seam.
A user joins the dispatched room, chats, and the reply proves which prompt the agent
runs with; after an edit in Convex the next call runs with the new prompt."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from livekit import api, rtc

from agent.admission.targeting import room_name_for
from devtools.fake_models import prompt_tag
from devtools.processes import LiveKitServer, LocalConvex
from services.store.file import local_backend_id
from tests.e2e_support import AGENT_NAME, Worker, start_worker

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)


@pytest.fixture
def worker(livekit: LiveKitServer, convex: LocalConvex) -> Iterator[Worker]:
    started = start_worker(livekit, convex)
    yield started
    started.stop()


@dataclass
class Call:
    room: rtc.Room
    agent: rtc.RemoteParticipant
    replies: asyncio.Queue[str]


@contextlib.asynccontextmanager
async def call(livekit: LiveKitServer, room_name: str) -> AsyncIterator[Call]:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room_name))
    token = (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity("caller")
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    room = rtc.Room()
    replies: asyncio.Queue[str] = asyncio.Queue()
    readers: set[asyncio.Future[None]] = set()

    def on_text(reader: rtc.TextStreamReader, participant_identity: str) -> None:
        async def read() -> None:
            await replies.put(await reader.read_all())

        task = asyncio.ensure_future(read())
        readers.add(task)
        task.add_done_callback(readers.discard)

    room.register_text_stream_handler("lk.transcription", on_text)
    await room.connect(livekit.url, token)
    try:
        agent = await wait_for_agent(room)
        yield Call(room, agent, replies)
    finally:
        await room.disconnect()


async def wait_for_agent(room: rtc.Room) -> rtc.RemoteParticipant:
    """The agent participant, once it has published its attributes."""
    async with asyncio.timeout(30):
        while True:
            for participant in room.remote_participants.values():
                is_agent = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                if is_agent and "agentId" in participant.attributes:
                    return participant
            await asyncio.sleep(0.05)


async def reply_to(current: Call, text: str) -> str:
    """Chat ``text`` to the agent and return its reply to it (greetings are skipped)."""
    await current.room.local_participant.send_text(text, topic="lk.chat")
    async with asyncio.timeout(20):
        while True:
            reply = await current.replies.get()
            if f"heard={text}" in reply:
                return reply


async def test_a_dispatched_call_runs_with_the_agents_current_prompt_and_sees_edits(
    livekit: LiveKitServer, convex: LocalConvex, worker: Worker
) -> None:
    before = convex.call("query", "agents:get", {"agentId": PRIYA})
    async with call(livekit, room_name_for(PRIYA, "e2e-1")) as first:
        assert first.agent.attributes["agentId"] == PRIYA
        assert first.agent.attributes["promptSource"] in ("db", "ram")
        assert first.agent.attributes["promptUpdatedAt"] == str(int(before["updatedAt"]))
        assert first.agent.attributes["promptStale"] == "false"
        assert "fullPrompt" not in json.dumps(dict(first.agent.attributes))
        reply = await reply_to(first, "hello from the first call")
        assert reply.startswith(f"prompt={prompt_tag(before['fullPrompt'])} ")

    seen_before = len(worker.events("agent_versions_changed"))
    convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "We moved to 12 Harbour Road."})
    after = convex.call("query", "agents:get", {"agentId": PRIYA})

    def refresher_saw_the_edit() -> bool:  # the worker's refresher polls every 0.5 s
        changes = worker.events("agent_versions_changed")[seen_before:]
        return any(PRIYA in change.get("agentIds", []) for change in changes)

    assert await asyncio.to_thread(worker.wait_for, refresher_saw_the_edit, 30), worker.tail()

    async with call(livekit, room_name_for(PRIYA, "e2e-2")) as second:
        assert second.agent.attributes["promptUpdatedAt"] == str(int(after["updatedAt"]))
        reply = await reply_to(second, "hello from the second call")
        assert reply.startswith(f"prompt={prompt_tag(after['fullPrompt'])} ")
    assert prompt_tag(after["fullPrompt"]) != prompt_tag(before["fullPrompt"])
    log = "\n".join(worker.lines)
    assert before["fullPrompt"][:60] not in log  # prompts never reach the logs
    assert '"event": "job_started"' in log
    timings = [json.loads(line) for line in worker.lines if '"event": "job_timings"' in line]
    assert timings, "no job_timings event"
    assert all(t["promptResolvedMs"] <= t["sessionStartedMs"] for t in timings)
    assert any(isinstance(t["firstReplyMs"], (int, float)) for t in timings)
