"""The caller hears the agent: the production session end to end, with real audio.

A real livekit-server, the worker by its real command with the production model factory
(``agent.sessions.openai:openai_session``) pointed at the OpenAI stand-in, and a caller
participant (``devtools.caller``) that publishes a microphone, hears the agent (the first
frame above a level, not the first frame), reads ``lk.transcription`` and speaks espeak-ng
utterances at real-time pace. The stand-in labels what it hears from its phrase book and
its replies quote that label, so a reply can be matched to the utterance it answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import dispatch_agent
from agent.sessions.provider_cache import prompt_cache_key
from devtools.caller import Caller, Transcript, caller_token
from devtools.processes import LiveKitServer, LocalConvex, OpenAIStandin
from services.store.file import local_backend_id
from tests.conftest import REPO
from tests.e2e_support import AGENT_NAME, Worker, server_api, services_env, start_worker, watch

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)
PRIYA_GREETING = "Thanks for calling Smile Bright Dental, this is Priya. How can I help?"
MARCO_GREETING = "Trattoria Marco, buongiorno!"
QUESTION = "What are your opening hours?"  # in the stand-in's phrase book: transcribed as these words
BOOKING = "I would like to book a table for two."
HEAR_SECONDS = 30.0


def voice_env(standin: OpenAIStandin, **extra: str) -> dict[str, str]:
    """The production session, its OpenAI traffic sent to the stand-in."""
    return {
        "AGENT_MODEL_FACTORY": "agent.sessions.openai:openai_session",
        "OPENAI_API_KEY": "standin-key",
        "OPENAI_BASE_URL": standin.base_url,
        **extra,
    }


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def agent_document(convex: LocalConvex, agent_id: str) -> dict[str, Any]:
    return dict(convex.call("query", "agents:get", {"agentId": agent_id}))


async def call(livekit: LiveKitServer, lk: api.LiveKitAPI, agent_id: str, suffix: str) -> tuple[Caller, float]:
    """A caller in the room, then the call started with ``dispatch_agent``; returns the
    caller and when the dispatch began (the time to first audio counts from there)."""
    room = room_name_for(agent_id, suffix)
    caller = Caller("caller")
    await caller.join(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room, "caller"))
    started = asyncio.get_running_loop().time()
    await dispatch_agent(lk, room, agent_id, agent_name=AGENT_NAME)
    return caller, started


def agent_said(caller: Caller, text: str) -> Transcript | None:
    return next((t for t in caller.agent_transcripts() if t.final and t.text.strip() == text), None)


async def hear_greeting(caller: Caller, greeting: str) -> None:
    await caller.first_agent_audio(HEAR_SECONDS)
    await caller.transcript_where(lambda t: t.identity != caller.identity and t.final and t.text == greeting, 30)
    await caller.agent_quiet(30)  # the caller speaks once the greeting has played out


async def ask_and_hear_the_answer(caller: Caller, utterance: str) -> None:
    """Speak; the caller's words come back transcribed; a spoken reply follows, and its
    transcript quotes what the stand-in heard (so it answers this utterance)."""
    ended = await caller.say(utterance)
    heard = await caller.transcript_where(lambda t: t.identity == caller.identity and t.final, 30)
    assert heard.text == utterance, f"the stand-in transcribed {heard.text!r}"
    await caller.agent_audio_after(ended, HEAR_SECONDS)
    reply = await caller.transcript_where(lambda t: t.identity != caller.identity and utterance in t.text, 30)
    assert reply.final


async def job_timings(worker: Worker, room_suffix: str) -> dict[str, Any]:
    """The ``job_timings`` event of the one job in the room (logged at its first reply or end)."""

    def found() -> list[dict[str, Any]]:
        return [e for e in worker.events("job_timings") if str(e.get("room", "")).endswith(room_suffix)]

    await wait_for_log(worker, lambda: bool(found()))
    assert len(found()) == 1, worker.tail()
    return found()[0]


async def wait_for_log(worker: Worker, predicate: Any, seconds: float = 30) -> None:
    assert await asyncio.to_thread(worker.wait_for, predicate, seconds), worker.tail()


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_the_caller_hears_the_greeting_and_a_spoken_answer_to_what_they_said(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin, executor: str
) -> None:
    worker = start_worker(livekit, convex, **voice_env(openai_standin, AGENT_EXECUTOR=executor))
    try:
        async with server_api(livekit) as lk:
            caller, _ = await call(livekit, lk, PRIYA, f"voice-{executor}")
            try:
                await hear_greeting(caller, PRIYA_GREETING)
                assert openai_standin.stats()["chats"] == 0, "the greeting asked the LLM"
                await ask_and_hear_the_answer(caller, QUESTION)
            finally:
                await caller.hang_up()
        document = agent_document(convex, PRIYA)
        last_chat = openai_standin.stats()["last_chat"]
        assert last_chat["messages"][0] == {"role": "system", "sha256": sha256(document["fullPrompt"])}
        assert last_chat["prompt_cache_key"] == prompt_cache_key(PRIYA, document["updatedAt"])
        timing = await job_timings(worker, f"voice-{executor}")
        assert timing["greetingSource"] in ("cache", "tts")
        assert isinstance(timing["firstAudioMs"], float)
    finally:
        worker.stop()


async def test_a_second_call_plays_the_greeting_from_the_cache_and_an_edit_changes_it(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin
) -> None:
    worker = start_worker(livekit, convex, **voice_env(openai_standin))
    new_greeting = "Smile Bright Dental, Priya speaking."
    try:
        await wait_for_log(worker, lambda: bool(worker.events("worker_configured")))
        async with server_api(livekit) as lk:
            first, _ = await call(livekit, lk, PRIYA, "cache-1")
            await hear_greeting(first, PRIYA_GREETING)
            await first.hang_up()
            await wait_for_log(worker, lambda: bool(worker.events("greeting_cached")))

            speech_before = openai_standin.stats()["requests"].get("/v1/audio/speech", 0)
            second, _ = await call(livekit, lk, PRIYA, "cache-2")
            await hear_greeting(second, PRIYA_GREETING)
            assert openai_standin.stats()["requests"].get("/v1/audio/speech", 0) == speech_before, (
                "the greeting was synthesized again"
            )
            await second.hang_up()
            assert (await job_timings(worker, "cache-2"))["greetingSource"] == "cache"

            config = {**agent_document(convex, PRIYA)["config"], "greeting": new_greeting}
            edited = convex.call("mutation", "agents:update", {"agentId": PRIYA, "config": config})["updatedAt"]

            def new_version_cached() -> bool:
                return any(e.get("updatedAt") == edited for e in worker.events("greeting_cached"))

            await wait_for_log(worker, new_version_cached)  # the refresher reloaded the hot agent
            assert sha256(new_greeting) in openai_standin.stats()["speech_inputs"]
            third, _ = await call(livekit, lk, PRIYA, "cache-3")
            await hear_greeting(third, new_greeting)
            await third.hang_up()
            assert (await job_timings(worker, "cache-3"))["greetingSource"] == "cache"
    finally:
        worker.stop()


async def test_a_hang_up_ends_the_job_at_once_not_when_the_server_closes_the_room(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin
) -> None:
    """The caller leaves: the job ends and frees its slot. The room is made to outlive
    the caller by minutes (``departure_timeout``), so a job that waited for livekit-server
    to close it would still be running when this test gives up."""
    worker = start_worker(livekit, convex, **voice_env(openai_standin))
    room = room_name_for(PRIYA, "hang-up")
    try:
        async with server_api(livekit) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=room, departure_timeout=300, empty_timeout=300))
            caller = Caller("caller")
            await caller.join(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room, "caller"))
            await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
            await caller.first_agent_audio(HEAR_SECONDS)
            await caller.hang_up()

            def ended() -> bool:
                return any(e["room"] == room for e in worker.events("job_ended"))

            await wait_for_log(worker, ended, 60)
            reason = next(e["reason"] for e in worker.events("job_ended") if e["room"] == room)
            assert "participant_disconnected" in reason, reason
    finally:
        worker.stop()


async def test_a_call_hung_up_before_its_caller_was_linked_ends_its_job_without_a_greeting(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin
) -> None:
    """The call is hung up (its room deleted) as soon as its agent is ready, before any
    caller joined. The job stops waiting for a caller to link at once (``callerLink``
    ``room_closed``), instead of holding its slot until the wait runs out (``timed_out``,
    3 s), and says no greeting to the empty room."""
    worker = start_worker(livekit, convex, **voice_env(openai_standin))
    room = room_name_for(PRIYA, "gone-before-link")
    try:
        async with server_api(livekit) as lk:
            await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

            def started() -> list[dict[str, Any]]:
                return [e for e in worker.events("job_started") if e["room"] == room]

            await wait_for_log(worker, lambda: bool(started()))
            assert [e.get("callerLink") for e in started()] == ["room_closed"], worker.tail()
            assert (await job_timings(worker, "gone-before-link"))["greetingSource"] is None
    finally:
        worker.stop()


async def test_a_caller_who_dials_as_the_last_one_hangs_up_gets_the_free_slot_on_the_first_dispatch(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin
) -> None:
    """One slot, three callers in a row, each dialing as soon as the last one's call has
    ended (``call_ended``), while that job still tears down. A worker that still counted
    the ending job, or told livekit-server only at its next periodic report, would be full
    for the next dispatch: livekit-server drops it and ``dispatch_agent`` makes another
    (``attempts`` 2)."""
    worker = start_worker(livekit, convex, **voice_env(openai_standin, AGENT_MAX_JOBS="1"))
    try:
        async with server_api(livekit) as lk:
            for n in range(3):
                room = room_name_for(PRIYA, f"redial-{n}")
                caller = Caller("caller")
                await caller.join(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room, "caller"))
                result = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
                assert result.attempts == 1, f"call {n}: the free slot was not offered ({result})"
                await caller.first_agent_audio(HEAR_SECONDS)
                await caller.hang_up()

                def call_ended(room: str = room) -> bool:
                    return any(e["room"] == room for e in worker.events("call_ended"))

                await wait_for_log(worker, call_ended)
    finally:
        worker.stop()


async def test_a_realtime_agent_greets_and_answers(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin
) -> None:
    worker = start_worker(livekit, convex, **voice_env(openai_standin))
    try:
        async with server_api(livekit) as lk:
            caller, _ = await call(livekit, lk, MARCO, "realtime")
            try:
                await hear_greeting(caller, MARCO_GREETING)
                await ask_and_hear_the_answer(caller, BOOKING)
            finally:
                await caller.hang_up()
        assert openai_standin.stats()["requests"].get("/v1/realtime", 0) >= 1
    finally:
        worker.stop()


SITECUSTOMIZE = """
import os, sys

_out = os.environ["NET_AUDIT_FILE"]


def _record(host):
    with open(_out, "a", encoding="utf-8") as out:
        out.write(str(host) + "\\n")


def _hook(event, args):
    if event == "socket.getaddrinfo":
        _record(args[0])
    elif event == "socket.connect" and isinstance(args[1], tuple):
        _record(args[1][0])


sys.addaudithook(_hook)
"""
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "None"}


async def test_dev_mode_reaches_no_host_but_the_configured_ones_and_its_turns_commit(
    livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin, tmp_path: Path
) -> None:
    """``python -m agent dev`` (livekit's dev mode) with every host name the worker's
    Python code looks up or connects to recorded by an audit hook: only loopback (the
    LiveKit server, Convex and the stand-in here), and a spoken question still gets its
    spoken answer (the turn committed without LiveKit Cloud's turn detector)."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    audit = tmp_path / "hosts.txt"
    env = {
        **services_env(livekit, convex),
        "LOG_FORMAT": "json",
        "NET_AUDIT_FILE": str(audit),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        **voice_env(openai_standin),
    }
    worker = start_dev_worker(env)
    try:
        await wait_for_log(worker, lambda: any("registered worker" in line for line in worker.lines), 90)
        async with server_api(livekit) as lk:
            caller, _ = await call(livekit, lk, PRIYA, "dev-mode")
            try:
                await hear_greeting(caller, PRIYA_GREETING)
                await ask_and_hear_the_answer(caller, QUESTION)
            finally:
                await caller.hang_up()
    finally:
        worker.stop()
    hosts = set(audit.read_text(encoding="utf-8").split())
    assert hosts, "the audit hook recorded nothing: it did not run"
    resolved = {h for h in hosts if h not in LOCAL_HOSTS and not _is_loopback(h)}
    assert not resolved, f"dev mode reached beyond the configured hosts: {sorted(resolved)}"


def start_dev_worker(env: dict[str, str]) -> Worker:
    """``python -m agent dev``, its output watched."""
    args = [sys.executable, "-m", "agent", "dev"]
    process = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    return watch(process, "thread")


def _is_loopback(host: str) -> bool:
    try:
        return socket.inet_aton(host)[0] == 127
    except OSError:
        return False
