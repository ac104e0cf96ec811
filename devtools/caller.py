"""A caller in Python (livekit rtc): joins a room, keeps a microphone open, hears the agent.

What tests and benchmarks need to say what a caller gets:

- a microphone track (``SOURCE_MICROPHONE``: the agent listens to nothing else) that
  always sends audio, silence between utterances, as a real microphone does (the agent's
  VAD needs the silence after speech to end a turn);
- the agent's audio, as the caller receives it: every frame's level, so the first frame
  *above a level* marks when the agent was heard (the first frame may be silence), and
  the gaps inside an utterance show where the audio stalled;
- both sides' transcripts from ``lk.transcription`` text streams.

Times are ``time.monotonic()``; utterances are espeak-ng speech (``devtools.speech``),
sent at real-time pace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from livekit import api, rtc
from livekit.rtc.data_stream import StreamError

from devtools.speech import speak

_T = TypeVar("_T")

SAMPLE_RATE = 24000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
LEVEL_DBFS = -40.0
"""A frame louder than this (RMS, dB full scale) is agent speech; espeak's speech through
Opus sits around -20 dBFS, silence and comfort noise far below -60."""
GAP_SECONDS = 0.1
"""A stall longer than this between two received frames of one agent utterance is a gap."""
UTTERANCE_END_SECONDS = 0.6
"""Silence this long after speech ends an agent utterance (for gap accounting)."""


class CallerError(RuntimeError):
    """The caller did not hear or see what it waited for; the message says what it got."""


@dataclass
class Transcript:
    identity: str
    text: str
    final: bool
    at: float


@dataclass
class AgentAudio:
    """What arrived from the agent: onsets of utterances and the stalls inside them."""

    onsets: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    """Seconds between consecutive frames inside an utterance, where over ``GAP_SECONDS``."""
    frames: int = 0
    last_loud: float | None = None
    last_frame: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def frame_dbfs(frame: rtc.AudioFrame) -> float:
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20 * float(np.log10(max(rms, 1e-9) / 32768.0))


class Caller:
    """One participant: ``join``, then ``first_agent_audio``, ``say``, ``reply_after``."""

    def __init__(self, identity: str = "caller") -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.audio = AgentAudio()
        self.transcripts: list[Transcript] = []
        self._transcript_event = asyncio.Event()
        self._source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        self._speech: asyncio.Queue[rtc.AudioFrame | float] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._utterance_ended: dict[int, float] = {}
        self._ended_event = asyncio.Event()
        self._utterances = 0

    async def join(self, url: str, token: str) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.register_text_stream_handler("lk.transcription", self._on_text)
        await self.room.connect(url, token)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._spawn(self._microphone())

    async def hang_up(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        await self._source.aclose()

    # ------------------------------------------------------------------ hearing the agent

    async def first_agent_audio(self, within: float) -> float:
        """When the agent was first heard (a frame above ``LEVEL_DBFS``)."""
        return await self.agent_audio_after(0.0, within)

    async def agent_audio_after(self, since: float, within: float) -> float:
        """The first onset of agent speech at or after ``since``."""
        found = await self._wait(lambda: next((t for t in self.audio.onsets if t >= since), None), within)
        if found is None:
            raise CallerError(f"no agent audio above {LEVEL_DBFS} dBFS within {within} s (onsets: {self.audio.onsets})")
        return found

    async def agent_quiet(self, within: float) -> float:
        """Wait until the agent has been silent for ``UTTERANCE_END_SECONDS`` (it finished
        speaking); returns when its last loud frame arrived."""

        def quiet_since() -> float | None:
            last = self.audio.last_loud
            return last if last is not None and time.monotonic() - last >= UTTERANCE_END_SECONDS else None

        found = await self._wait(quiet_since, within)
        if found is None:
            raise CallerError(f"the agent did not stop speaking within {within} s")
        return found

    def _on_track(self, track: rtc.Track, publication: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and who.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._spawn(self._listen(track))

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        audio = self.audio
        try:
            async for event in stream:
                now = time.monotonic()
                audio.frames += 1
                loud = frame_dbfs(event.frame) > LEVEL_DBFS
                speaking = audio.last_loud is not None and now - audio.last_loud < UTTERANCE_END_SECONDS
                if speaking and audio.last_frame is not None and now - audio.last_frame > GAP_SECONDS:
                    audio.gaps.append(now - audio.last_frame)
                if loud:
                    if not speaking:
                        audio.onsets.append(now)
                        audio.changed.set()
                    audio.last_loud = now
                audio.last_frame = now
        finally:
            await stream.aclose()

    # ------------------------------------------------------------------ transcripts

    def _on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self._spawn(self._read_text(reader, identity))

    async def _read_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        try:
            text = await reader.read_all()
        except StreamError:  # the call ended while the agent was still sending it
            return
        final = (reader.info.attributes or {}).get("lk.transcription_final") == "true"
        self.transcripts.append(Transcript(identity, text, final, time.monotonic()))
        self._transcript_event.set()

    def agent_transcripts(self) -> list[Transcript]:
        return [t for t in self.transcripts if t.identity != self.identity and t.text.strip()]

    def caller_transcripts(self) -> list[Transcript]:
        return [t for t in self.transcripts if t.identity == self.identity and t.text.strip()]

    async def transcript_where(self, check: Callable[[Transcript], bool], within: float) -> Transcript:
        found = await self._wait(lambda: next((t for t in self.transcripts if check(t)), None), within)
        if found is None:
            seen = [(t.identity, t.text[:80], t.final) for t in self.transcripts]
            raise CallerError(f"no such transcript within {within} s; seen: {seen}")
        return found

    # ------------------------------------------------------------------ speaking

    async def say(self, text: str) -> float:
        """Speak ``text`` (espeak-ng) into the microphone at real-time pace; returns when
        the utterance's last sample went out (the end of the caller's turn)."""
        pcm = speak(text, sample_rate=SAMPLE_RATE)
        self._utterances += 1
        number = self._utterances
        step = FRAME_SAMPLES * 2
        for start in range(0, len(pcm) - len(pcm) % 2, step):
            chunk = pcm[start : start + step].ljust(step, b"\0")
            self._speech.put_nowait(rtc.AudioFrame(chunk, SAMPLE_RATE, 1, FRAME_SAMPLES))
        self._speech.put_nowait(float(number))  # marks the end of this utterance
        ended = await self._wait(lambda: self._utterance_ended.get(number), within=len(pcm) / 2 / SAMPLE_RATE + 30)
        if ended is None:
            raise CallerError("the microphone never sent the utterance")
        return ended

    async def _microphone(self) -> None:
        """Always sending: queued speech, else silence. ``capture_frame`` paces it (it waits
        while the source's 100 ms queue is full)."""
        silence = rtc.AudioFrame(b"\0" * FRAME_SAMPLES * 2, SAMPLE_RATE, 1, FRAME_SAMPLES)
        while True:
            try:
                item = self._speech.get_nowait()
            except asyncio.QueueEmpty:
                item = silence
            if isinstance(item, float):
                # the last speech frame is out once what is queued ahead of now has played
                self._utterance_ended[int(item)] = time.monotonic() + self._source.queued_duration
                self._ended_event.set()
                continue
            await self._source.capture_frame(item)

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, probe: Callable[[], _T | None], within: float) -> _T | None:
        deadline = time.monotonic() + within
        while (found := probe()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            events = (self.audio.changed, self._transcript_event, self._ended_event)
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waiters, timeout=min(remaining, 0.5), return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            for event in events:
                event.clear()
        return found


def caller_token(livekit_key: str, livekit_secret: str, room: str, identity: str) -> str:
    return (
        api.AccessToken(livekit_key, livekit_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def scripted_call(url: str, token: str, question: str | None, within: float) -> None:
    """One call as a script, each step a line on stdout with ``time.monotonic()`` (the
    same clock in every process of the host): ``joined``, then ``greeting`` (heard),
    ``said`` (the end of the caller's utterance) and ``reply`` (heard), ``gaps`` (count and
    longest, seconds) and ``done``; ``error <why>`` instead of a step that did not come.
    Whoever drives it starts the dispatch once it reads ``joined``."""
    caller = Caller("caller")
    try:
        await caller.join(url, token)
        print(f"joined {time.monotonic():.6f}", flush=True)
        print(f"greeting {await caller.first_agent_audio(within):.6f}", flush=True)
        if question:
            await caller.agent_quiet(within)
            ended = await caller.say(question)
            print(f"said {ended:.6f}", flush=True)
            print(f"reply {await caller.agent_audio_after(ended, within):.6f}", flush=True)
        print(f"gaps {len(caller.audio.gaps)} {max(caller.audio.gaps, default=0.0):.6f}", flush=True)
    except (CallerError, rtc.ConnectError) as exc:
        print(f"error {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    finally:
        await caller.hang_up()
        print("done", flush=True)


TALK_PHRASES = (
    "What are your opening hours?",
    "I would like to book a table for two.",
    "Do you have a vegetarian menu?",
    "Where are you located?",
)
"""What a talking caller says, in turn: phrases of the stand-in's phrase book."""


async def talking_call(url: str, token: str, talk_seconds: float, pause_seconds: float, within: float) -> None:
    """A call held for ``talk_seconds``: the greeting, then turns (wait for the agent to
    finish, pause, speak a phrase, hear the reply) until the time is up. Lines on stdout:
    ``joined``, ``greeting``, one ``turn <said> <reply>`` per turn, ``gaps <count>
    <longest>``, ``done``; ``error <why>`` where a step did not come (the call is lost)."""
    caller = Caller("caller")
    try:
        await caller.join(url, token)
        print(f"joined {time.monotonic():.6f}", flush=True)
        greeting = await caller.first_agent_audio(within)
        print(f"greeting {greeting:.6f}", flush=True)
        deadline = greeting + talk_seconds
        turn = 0
        while time.monotonic() < deadline:
            await caller.agent_quiet(within)
            await asyncio.sleep(pause_seconds)  # the caller's own pace, not a wait for an event
            ended = await caller.say(TALK_PHRASES[turn % len(TALK_PHRASES)])
            reply = await caller.agent_audio_after(ended, within)
            print(f"turn {ended:.6f} {reply:.6f}", flush=True)
            turn += 1
        await caller.agent_quiet(within)
    except (CallerError, rtc.ConnectError) as exc:
        print(f"error {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    finally:
        print(f"gaps {len(caller.audio.gaps)} {max(caller.audio.gaps, default=0.0):.6f}", flush=True)
        await caller.hang_up()
        print("done", flush=True)


async def serve(within: float) -> None:
    """Calls one after another, each asked for by a JSON line on stdin
    (``{"url", "token", "question"}``, or ``{"url", "token", "talk_seconds",
    "pause_seconds"}`` for a talking call, see ``talking_call``): a caller process kept for many calls pays its start
    (importing livekit: about a second of CPU) once, not on every call of a load test."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        try:
            order = json.loads(line)
            url, token, question = str(order["url"]), str(order["token"]), order.get("question")
            talk_seconds = float(order.get("talk_seconds") or 0)
            pause_seconds = float(order.get("pause_seconds") or 1.0)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"error bad order: {type(exc).__name__}", flush=True)
            print("done", flush=True)
            continue
        if talk_seconds > 0:
            await talking_call(url, token, talk_seconds, pause_seconds, within)
        else:
            await scripted_call(url, token, str(question) if question else None, within)


def main(argv: list[str] | None = None) -> int:
    """``python -m devtools.caller --url URL --token TOKEN [--question TEXT]``: one call in a
    process of its own; ``--serve``: calls ordered one JSON line at a time on stdin."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--question", help="speak this once the greeting has played, and wait for the reply")
    parser.add_argument("--serve", action="store_true", help="take calls as JSON lines on stdin")
    parser.add_argument("--within", type=float, default=60.0, help="seconds to wait for each step")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.within))
    elif args.url and args.token:
        asyncio.run(scripted_call(args.url, args.token, args.question, args.within))
    else:
        parser.error("--url and --token, or --serve")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
