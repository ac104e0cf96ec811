"""``python -m devtools.openai_standin.cpu_check``: what the stand-in costs in CPU while it
serves calls, next to what the clients driving it cost in the same run.

``--calls`` simulated calls run side by side for ``--seconds``, each as the production
pipeline uses the stand-in: the real ``openai.STT(use_realtime=True)`` stream fed caller
audio at real time (default phrases with pauses), and for every final transcript one
streamed chat (``openai.LLM``) and one speech request (``openai.TTS``, ``pcm``). The
stand-in runs with its default delays. It prints the stand-in's CPU seconds (from its
``/_standin/stats``) and this driver process's, over the same wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from livekit import rtc
from livekit.agents import llm, stt, utils
from livekit.plugins import openai

from devtools.openai_standin.hearing import DEFAULT_PHRASES
from devtools.processes import OpenAIStandin, start_openai_standin
from devtools.speech import speak

RATE = 24000
STEP = RATE // 50  # 20 ms


async def one_call(standin: OpenAIStandin, index: int, seconds: float) -> int:
    """A call's worth of traffic; returns how many turns it completed."""
    base = standin.base_url
    recognizer = openai.STT(model="gpt-4o-mini-transcribe", use_realtime=True, base_url=base, api_key="x")
    model = openai.LLM(model="gpt-4o-mini", base_url=base, api_key="x")
    tts = openai.TTS(base_url=base, api_key="x", response_format="pcm")
    stream = recognizer.stream()
    turns = 0

    async def answer() -> None:
        nonlocal turns
        async for event in stream:
            if event.type != stt.SpeechEventType.FINAL_TRANSCRIPT:
                continue
            ctx = llm.ChatContext()
            ctx.add_message(role="system", content="You are a test.")
            ctx.add_message(role="user", content=event.alternatives[0].text)
            text = ""
            async with model.chat(chat_ctx=ctx) as reply:
                async for chunk in reply:
                    text += chunk.delta.content if chunk.delta and chunk.delta.content else ""
            async with tts.synthesize(text) as speech:
                async for _ in speech:
                    pass
            turns += 1

    answering = asyncio.create_task(answer())
    audio = b"".join(speak(p) + bytes(RATE * 2) for p in DEFAULT_PHRASES[index % 3 :] + DEFAULT_PHRASES[: index % 3])
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds:
        offset = sent * STEP * 2 % len(audio)
        chunk = audio[offset : offset + STEP * 2].ljust(STEP * 2, b"\0")
        stream.push_frame(rtc.AudioFrame(chunk, RATE, 1, STEP))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent * 0.02 - time.monotonic()))  # real-time pace
    answering.cancel()
    await asyncio.gather(answering, return_exceptions=True)
    await stream.aclose()
    for closable in (recognizer, model, tts):
        await closable.aclose()
    return turns


async def main(calls: int, seconds: float) -> None:
    standin = start_openai_standin()
    try:
        before = standin.stats()["process"]["cpu_seconds"]
        own_before, wall_before = time.process_time(), time.monotonic()
        async with utils.http_context.open():
            turns = await asyncio.gather(*(one_call(standin, i, seconds) for i in range(calls)))
        wall = time.monotonic() - wall_before
        standin_cpu = standin.stats()["process"]["cpu_seconds"] - before
        driver_cpu = time.process_time() - own_before
    finally:
        standin.stop()
    print(
        f"{calls} calls x {seconds:.0f} s of caller audio, {sum(turns)} turns, {wall:.1f} s wall:"
        f" stand-in {standin_cpu:.2f} CPU s ({standin_cpu / wall:.1%} of a core);"
        f" baseline, the driving clients {driver_cpu:.2f} CPU s ({driver_cpu / wall:.1%})",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m devtools.openai_standin.cpu_check", description=__doc__)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.seconds))
