"""``python -m devtools.openai_standin.match_check``: how well the phrase book names phrases
that went through a real livekit-server, the way a worker's STT receives them.

Each of ``--callers`` speakers (side by side, to load the machine as a burst does) joins its
own room on a fresh ``livekit-server --dev``, speaks every default phrase ``--rounds`` times
(espeak-ng at 48 kHz, paced at real time by ``capture_frame``), and a listener records what
arrives through ``rtc.AudioStream`` at 24 kHz. Each recording is then cut by the
:class:`~devtools.openai_standin.hearing.Ear` and matched: against the full book (hits), and
against the book without the spoken phrase (false names), with the cost ranges the
threshold sits between.
"""

from __future__ import annotations

import argparse
import asyncio

from livekit import api, rtc

from devtools.openai_standin.hearing import DEFAULT_PHRASES, Ear, PhraseBook, features, warped_cost
from devtools.processes import LiveKitServer, start_livekit
from devtools.speech import speak

RATE = 48000
STEP = RATE // 50  # 20 ms frames


def _token(livekit: LiveKitServer, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(livekit.api_key, livekit.api_secret).with_identity(identity).with_grants(grants).to_jwt()


async def record(livekit: LiveKitServer, room_name: str, rounds: int) -> bytes:
    """What a listener receives while a speaker says every default phrase ``rounds`` times."""
    speaker, listener = rtc.Room(), rtc.Room()
    subscribed: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

    def on_track(track: rtc.Track, *_: object) -> None:
        if not subscribed.done():
            subscribed.set_result(track)

    listener.on("track_subscribed", on_track)
    await listener.connect(livekit.url, _token(livekit, room_name, "listener"))
    await speaker.connect(livekit.url, _token(livekit, room_name, "speaker"))
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await speaker.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("mic", source), options)
    stream = rtc.AudioStream(await subscribed, sample_rate=24000, num_channels=1)
    received = bytearray()

    async def listen() -> None:
        async for event in stream:
            received.extend(event.frame.data.tobytes())

    listening = asyncio.create_task(listen())
    for _ in range(rounds):
        for phrase in DEFAULT_PHRASES:
            pcm = speak(phrase, sample_rate=RATE) + bytes(RATE * 2)
            pcm += bytes(-len(pcm) % (STEP * 2))
            for start in range(0, len(pcm), STEP * 2):
                await source.capture_frame(rtc.AudioFrame(pcm[start : start + STEP * 2], RATE, 1, STEP))
    await source.wait_for_playout()
    await asyncio.sleep(1)  # the last phrase's trailing silence reaches the listener
    listening.cancel()
    await speaker.disconnect()
    await listener.disconnect()
    return bytes(received)


def score(recordings: list[bytes]) -> str:
    book = PhraseBook(DEFAULT_PHRASES)
    without = {phrase: PhraseBook([p for p in DEFAULT_PHRASES if p != phrase]) for phrase in DEFAULT_PHRASES}
    reference = {phrase: features(speak(phrase, sample_rate=24000)) for phrase in DEFAULT_PHRASES}
    heard = hits = false_names = 0
    right: list[float] = []
    wrong: list[float] = []
    stretch: list[float] = []
    for pcm in recordings:
        utterances = [u for kind, u in Ear(silence_ms=350).hear(pcm + bytes(48000)) if kind == "stopped"]
        if len(utterances) % len(DEFAULT_PHRASES):
            return f"cut into {len(utterances)} utterances, not a multiple of {len(DEFAULT_PHRASES)}: cannot score"
        for index, utterance in enumerate(utterances):
            truth = DEFAULT_PHRASES[index % len(DEFAULT_PHRASES)]
            heard += 1
            hits += book.match(utterance.pcm) == truth
            false_names += without[truth].match(utterance.pcm) is not None
            mine = features(utterance.pcm)
            stretch.append(len(mine) / len(reference[truth]))
            for phrase, theirs in reference.items():
                (right if phrase == truth else wrong).append(warped_cost(mine, theirs))
    return (
        f"utterances {heard}: named right {hits}; named after another phrase when theirs is left out"
        f" {false_names}; cost of the right phrase max {max(right):.3f}, of others min {min(wrong):.3f};"
        f" heard/spoken duration {min(stretch):.2f}-{max(stretch):.2f}"
    )


async def main(rounds: int, callers: int) -> None:
    livekit = start_livekit()
    try:
        recordings = await asyncio.gather(*(record(livekit, f"match-check-{i}", rounds) for i in range(callers)))
    finally:
        livekit.stop()
    print(score(list(recordings)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m devtools.openai_standin.match_check", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--callers", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.callers))
