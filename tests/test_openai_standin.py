"""The OpenAI stand-in, driven by the real clients the worker uses (livekit-plugins-openai and
the openai SDK), against the real spawned process (``python -m devtools.openai_standin``)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import openai as openai_sdk
import pytest
from livekit import api, rtc
from livekit.agents import llm, stt, utils
from livekit.plugins import openai

from devtools.openai_standin.encode import espeak_voice
from devtools.openai_standin.hearing import DEFAULT_PHRASES, PhraseBook
from devtools.openai_standin.replies import GREETING_REPLY
from devtools.processes import LiveKitServer, OpenAIStandin, ServiceStartError, start_openai_standin
from devtools.speech import speak
from tests.conftest import unavailable
from tests.helpers import wait_for_async

RATE = 24000
DEADLINE_S = 30


def level_dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(20 * np.log10(max(np.sqrt(np.mean(samples**2)) / 32768, 1e-9)))


def long_prompt(words: int) -> str:
    """``words`` tokens as the stand-in counts them (one per word)."""
    return " ".join(f"rule{i}" for i in range(words))


async def chat(model: openai.LLM, messages: list[tuple[str, str]]) -> tuple[str, llm.CompletionUsage | None]:
    ctx = llm.ChatContext()
    for role, text in messages:
        ctx.add_message(role=role, content=text)  # type: ignore[arg-type]
    text, usage = "", None
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                text += chunk.delta.content
            if chunk.usage is not None:
                usage = chunk.usage
    return text, usage


async def test_chat_streams_a_reply_that_quotes_the_last_user_message(openai_standin: OpenAIStandin) -> None:
    model = openai.LLM(model="gpt-4o-mini", base_url=openai_standin.base_url, api_key="x")
    text, usage = await chat(model, [("system", "Be brief."), ("user", "first"), ("user", "book a table")])
    await model.aclose()
    assert text == "You said: book a table."
    assert usage is not None and usage.completion_tokens == 5  # "You said: book a table." is five words
    stats = openai_standin.stats()
    assert stats["requests"]["/v1/chat/completions"] == 1
    fingerprints = [m["sha256"] for m in stats["last_chat"]["messages"]]
    assert fingerprints[0] == hashlib.sha256(b"Be brief.").hexdigest()
    assert "Be brief." not in str(stats)


async def test_cached_tokens_only_for_a_repeated_key_sharing_1024_tokens(openai_standin: OpenAIStandin) -> None:
    # 1,299 words + the role marker = 1,300 tokens of shared system prompt; the user turn differs.
    system = long_prompt(1299)
    keyed = openai.LLM(model="gpt-4o-mini", base_url=openai_standin.base_url, api_key="x", prompt_cache_key="agent:1")
    other = openai.LLM(model="gpt-4o-mini", base_url=openai_standin.base_url, api_key="x", prompt_cache_key="agent:2")
    short = openai.LLM(model="gpt-4o-mini", base_url=openai_standin.base_url, api_key="x", prompt_cache_key="agent:3")
    try:
        _, first = await chat(keyed, [("system", system), ("user", "hello")])
        _, again = await chat(keyed, [("system", system), ("user", "something else")])
        _, other_key = await chat(other, [("system", system), ("user", "hello")])
        await chat(short, [("system", long_prompt(999)), ("user", "hello")])
        _, short_again = await chat(short, [("system", long_prompt(999)), ("user", "hello")])
    finally:
        for model in (keyed, other, short):
            await model.aclose()
    assert first is not None and first.prompt_cached_tokens == 0
    # shared prefix: 1,300 system tokens + the user marker = 1,301 -> 1,024 + 2 x 128
    assert again is not None and again.prompt_cached_tokens == 1280
    assert other_key is not None and other_key.prompt_cached_tokens == 0
    # a repeat below 1,024 tokens is never cached
    assert short_again is not None and short_again.prompt_cached_tokens == 0
    assert openai_standin.stats()["last_chat"]["prompt_cache_key"] == "agent:3"


async def test_chat_without_streaming_honours_max_tokens(openai_standin: OpenAIStandin) -> None:
    client = openai_sdk.AsyncOpenAI(base_url=openai_standin.base_url, api_key="x")
    answer = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    await client.close()
    assert answer.choices[0].message.content == "You said: "
    assert answer.choices[0].finish_reason == "length"


async def synthesize(tts: openai.TTS, text: str) -> bytes:
    frames = [event.frame async for event in tts.synthesize(text)]
    return rtc.combine_audio_frames(frames).data.tobytes() if frames else b""


@pytest.mark.parametrize("response_format", ["pcm", "mp3"])
async def test_speech_is_the_spoken_text_in_the_requested_format(
    openai_standin: OpenAIStandin, response_format: str
) -> None:
    text = "Hello, I would like to book a table for two."
    tts = openai.TTS(base_url=openai_standin.base_url, api_key="x", response_format=response_format)
    async with utils.http_context.open():
        pcm = await synthesize(tts, text)
    await tts.aclose()
    expected_s = len(speak(text, sample_rate=RATE)) / 2 / RATE
    assert abs(len(pcm) / 2 / RATE - expected_s) < 0.15  # mp3 pads a frame or two
    assert level_dbfs(pcm) > -30  # speech, not silence
    stats = openai_standin.stats()
    assert stats["requests"]["/v1/audio/speech"] == 1
    assert stats["speech_inputs"] == [hashlib.sha256(text.encode()).hexdigest()]


async def test_speech_plain_body_when_not_asked_for_sse(openai_standin: OpenAIStandin) -> None:
    client = openai_sdk.AsyncOpenAI(base_url=openai_standin.base_url, api_key="x")
    answer = await client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="ash", input="Yes please.", response_format="wav"
    )
    await client.close()
    with av.open(io.BytesIO(answer.content), mode="r") as container:
        seconds = sum(float(frame.samples) / frame.sample_rate for frame in container.decode(audio=0))
    assert answer.response.headers["content-type"] == "audio/wav"
    assert answer.response.headers["x-request-id"].startswith("req_")  # what the TTS plugin reports
    expected = speak("Yes please.", sample_rate=RATE, voice=espeak_voice("ash"))
    assert abs(seconds - len(expected) / 2 / RATE) < 0.02


async def test_bad_requests_get_an_openai_style_400(openai_standin: OpenAIStandin) -> None:
    client = openai_sdk.AsyncOpenAI(base_url=openai_standin.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai_sdk.BadRequestError, match="response_format"):
        await client.audio.speech.create(model="gpt-4o-mini-tts", voice="ash", input="hi", response_format="ogg")  # type: ignore[arg-type]
    with pytest.raises(openai_sdk.BadRequestError, match="messages"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    await client.close()


async def test_prewarm_paths_answer_and_stats_reset(openai_standin: OpenAIStandin) -> None:
    model = openai.LLM(model="gpt-4o-mini", base_url=openai_standin.base_url, api_key="x")
    tts = openai.TTS(base_url=openai_standin.base_url, api_key="x")
    model.prewarm()
    tts.prewarm()

    async def both_warmed() -> bool:
        return {"/v1/models", "/v1/"} <= set(openai_standin.stats()["requests"])

    assert await wait_for_async(both_warmed, DEADLINE_S), openai_standin.stats()
    await model.aclose()
    await tts.aclose()
    openai_standin.reset()
    after = openai_standin.stats()
    assert after["requests"] == {}
    assert after["process"]["cpu_seconds"] > 0  # the process's own total: reset leaves it


def frames_of(pcm: bytes, ms: int = 20, rate: int = RATE) -> list[rtc.AudioFrame]:
    step = rate * ms // 1000 * 2
    padded = pcm + bytes(-len(pcm) % step)
    return [
        rtc.AudioFrame(padded[i : i + step], sample_rate=rate, num_channels=1, samples_per_channel=step // 2)
        for i in range(0, len(padded), step)
    ]


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


async def finals(events: AsyncIterator[stt.SpeechEvent], count: int) -> list[str]:
    out: list[str] = []
    async with asyncio.timeout(DEADLINE_S):
        async for event in events:
            if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                out.append(event.alternatives[0].text)
                if len(out) == count:
                    return out
    return out


async def test_transcription_gives_one_final_transcript_per_utterance_and_none_for_silence(
    openai_standin: OpenAIStandin,
) -> None:
    known, unknown = DEFAULT_PHRASES[1], "The quick brown fox jumps over the lazy dog."
    audio = silence(2) + speak(known) + silence(1.5) + speak(unknown) + silence(1.5)
    async with utils.http_context.open():
        model = openai.STT(model="gpt-4o-transcribe", use_realtime=True, base_url=openai_standin.base_url, api_key="x")
        stream = model.stream()
        for frame in frames_of(audio):
            stream.push_frame(frame)
        heard = await finals(stream, 2)
        await stream.aclose()
        await model.aclose()
    # the leading 2 s of silence gave nothing: the first final is the first phrase
    assert heard[0] == known
    assert heard[1].startswith("utterance ") and heard[1].endswith(" s)")
    assert openai_standin.stats()["transcripts"] == heard


async def test_realtime_model_greets_and_answers_caller_speech(openai_standin: OpenAIStandin) -> None:
    phrase = DEFAULT_PHRASES[2]
    async with utils.http_context.open():
        model = openai.realtime.RealtimeModel(base_url=openai_standin.base_url, api_key="x")
        session = model.session()
        generations: asyncio.Queue[llm.GenerationCreatedEvent] = asyncio.Queue()
        transcripts: asyncio.Queue[str] = asyncio.Queue()
        session.on("generation_created", generations.put_nowait)
        session.on(
            "input_audio_transcription_completed",
            lambda ev: transcripts.put_nowait(ev.transcript) if ev.is_final else None,
        )
        try:
            async with asyncio.timeout(DEADLINE_S):
                greeting = await session.generate_reply()
                assert greeting.user_initiated
                text, audio = await spoken(greeting)
                assert text == GREETING_REPLY
                assert len(audio) / 2 / RATE > 1 and level_dbfs(audio) > -30
                await generations.get()  # the greeting's own event
                for frame in frames_of(silence(1) + speak(phrase) + silence(1.5)):
                    session.push_audio(frame)
                assert await transcripts.get() == phrase
                reply = await generations.get()
                text, audio = await spoken(reply)
                assert text == f"You said: {phrase}."
                assert len(audio) / 2 / RATE > 1
        finally:
            await session.aclose()
            await model.aclose()
    stats = openai_standin.stats()
    assert stats["transcripts"] == [phrase]
    assert stats["replies"] == [GREETING_REPLY, f"You said: {phrase}."]


async def spoken(generation: llm.GenerationCreatedEvent) -> tuple[str, bytes]:
    """The text and audio of a realtime generation's (first) message."""
    message = await anext(aiter(generation.message_stream))

    async def text() -> str:
        return "".join([delta async for delta in message.text_stream])

    async def audio() -> bytes:
        return b"".join([frame.data.tobytes() async for frame in message.audio_stream])

    return await asyncio.gather(text(), audio())


def join_token(livekit: LiveKitServer, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(livekit.api_key, livekit.api_secret).with_identity(identity).with_grants(grants).to_jwt()


async def test_phrases_are_recognised_after_webrtc_opus_and_resampling(
    openai_standin: OpenAIStandin, livekit: LiveKitServer
) -> None:
    """What a worker's STT receives went through Opus, livekit-server and livekit's
    resampler (48 kHz and back): the phrase book still names each phrase, once."""
    phrases = [DEFAULT_PHRASES[0], DEFAULT_PHRASES[8]]
    speaker, listener = rtc.Room(), rtc.Room()
    subscribed: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

    def on_track(track: rtc.Track, *_: object) -> None:
        if not subscribed.done():
            subscribed.set_result(track)

    listener.on("track_subscribed", on_track)
    await listener.connect(livekit.url, join_token(livekit, "standin-opus", "listener"))
    await speaker.connect(livekit.url, join_token(livekit, "standin-opus", "speaker"))
    source = rtc.AudioSource(48000, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await speaker.local_participant.publish_track(track, options)
    async with utils.http_context.open():
        model = openai.STT(model="gpt-4o-transcribe", use_realtime=True, base_url=openai_standin.base_url, api_key="x")
        recognition = model.stream()
        try:
            async with asyncio.timeout(DEADLINE_S):
                audio_stream = rtc.AudioStream(await subscribed, sample_rate=RATE, num_channels=1)

                async def forward() -> None:
                    async for event in audio_stream:
                        recognition.push_frame(event.frame)

                forwarding = asyncio.create_task(forward())

                async def say(text: str) -> None:
                    for frame in frames_of(speak(text, sample_rate=48000) + silence(1), rate=48000):
                        await source.capture_frame(frame)

                for phrase in phrases:
                    await say(phrase)
                heard = await finals(recognition, len(phrases))
                forwarding.cancel()
        finally:
            await recognition.aclose()
            await model.aclose()
            await speaker.disconnect()
            await listener.disconnect()
    assert heard == phrases


async def test_configured_delays_and_phrases_hold(tmp_path: Path) -> None:
    """Delays as lower bounds only (a loaded machine can make answers later, never
    earlier); a phrase from ``--phrases`` is named like a default one."""
    delay_s = 0.3
    extra = "Please send me the menu."
    (tmp_path / "phrases.txt").write_text(f"# ours\n{extra}\n")
    try:
        slow = start_openai_standin(
            stt_delay_ms=delay_s * 1000,
            llm_ttft_ms=delay_s * 1000,
            tts_ttfb_ms=delay_s * 1000,
            phrases=tmp_path / "phrases.txt",
        )
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    try:
        async with utils.http_context.open():
            model = openai.LLM(model="gpt-4o-mini", base_url=slow.base_url, api_key="x")
            ctx = llm.ChatContext()
            ctx.add_message(role="user", content="hi")
            started = time.monotonic()
            async with model.chat(chat_ctx=ctx) as stream:
                async for chunk in stream:
                    if chunk.delta and chunk.delta.content:
                        break
            assert time.monotonic() - started >= delay_s
            await model.aclose()

            tts = openai.TTS(base_url=slow.base_url, api_key="x", response_format="pcm")
            started = time.monotonic()
            async for _ in tts.synthesize("Yes please."):
                break
            assert time.monotonic() - started >= delay_s
            await tts.aclose()

            recognizer = openai.STT(model="gpt-4o-transcribe", use_realtime=True, base_url=slow.base_url, api_key="x")
            stream_in = recognizer.stream()
            for frame in frames_of(speak(extra) + silence(1)):
                stream_in.push_frame(frame)
            sent = time.monotonic()
            assert await finals(stream_in, 1) == [extra]
            assert time.monotonic() - sent >= delay_s
            await stream_in.aclose()
            await recognizer.aclose()
    finally:
        slow.stop()


async def test_file_transcription_names_the_phrase_and_is_empty_for_silence(openai_standin: OpenAIStandin) -> None:
    phrase = DEFAULT_PHRASES[3]
    async with utils.http_context.open():
        model = openai.STT(model="gpt-4o-mini-transcribe", base_url=openai_standin.base_url, api_key="x")
        spoken_event = await model.recognize(frames_of(silence(0.3) + speak(phrase, sample_rate=48000), rate=48000))
        silent_event = await model.recognize(frames_of(silence(2)))
        await model.aclose()
    assert spoken_event.alternatives[0].text == phrase
    assert silent_event.alternatives[0].text == ""
    assert openai_standin.stats()["transcripts"] == [phrase]


async def test_realtime_without_turn_detection_waits_for_the_clients_commit(openai_standin: OpenAIStandin) -> None:
    phrase = DEFAULT_PHRASES[6]
    async with utils.http_context.open():
        model = openai.realtime.RealtimeModel(base_url=openai_standin.base_url, api_key="x", turn_detection=None)
        session = model.session()
        transcripts: asyncio.Queue[str] = asyncio.Queue()
        session.on(
            "input_audio_transcription_completed",
            lambda ev: transcripts.put_nowait(ev.transcript) if ev.is_final else None,
        )
        try:
            async with asyncio.timeout(DEADLINE_S):
                for frame in frames_of(speak(phrase) + silence(1.5)):
                    session.push_audio(frame)
                # nothing is committed (or answered) until the client says so; then exactly one transcript
                session.commit_audio()
                assert await transcripts.get() == phrase
                text, _ = await spoken(await session.generate_reply())
                assert text == f"You said: {phrase}."
        finally:
            await session.aclose()
            await model.aclose()
    stats = openai_standin.stats()
    assert stats["replies"] == [f"You said: {phrase}."]  # no response of the server's own
    assert stats["realtime_sessions"] == {"conversation": 1}


def test_a_phrase_missing_from_the_book_is_not_named_after_another() -> None:
    for phrase in DEFAULT_PHRASES:
        audio = speak(phrase)
        assert PhraseBook(DEFAULT_PHRASES).match(audio) == phrase
        assert PhraseBook([p for p in DEFAULT_PHRASES if p != phrase]).match(audio) is None
