"""The production session: ``AGENT_MODEL_FACTORY``'s default, :func:`openai_session`.

The production session is stated here rather than inherited from livekit's defaults,
because those defaults change with the CLI mode: under ``python -m agent dev``
livekit-agents switches the turn detector and interruption detection to LiveKit Cloud
models (``utils.is_dev_mode()``), which needs the network and is not what ``start`` runs.
Here both modes get the same local pipeline: the Silero VAD and the ``v1-mini``
end-of-turn model from livekit-local-inference, interruptions by VAD, OpenAI STT, LLM
and TTS through livekit-plugins-openai (``OPENAI_BASE_URL`` honoured by the OpenAI
client), with models and voice from the agent's config (``agent.sessions.voice_options``);
the weights of the local models are loaded before any job (``agent.prewarm.local_models``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import httpx2
import openai as openai_sdk
from livekit.agents import AgentSession, inference, room_io
from livekit.agents.voice.turn import TurnHandlingOptions
from livekit.plugins import openai

from agent.sessions.factory import SessionPlan
from agent.sessions.provider_cache import prompt_cache_key
from agent.sessions.voice_options import VoiceOptions
from services.records import PromptResult
from services.tls import client_ssl_context

OPENAI_TIMEOUT = httpx2.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0)
"""livekit-plugins-openai's own timeouts for its clients."""


def openai_client() -> openai_sdk.AsyncOpenAI:
    """One OpenAI client for a session's STT, LLM and TTS.

    Each plugin builds its own client otherwise, and httpx (the OpenAI SDK's ``httpx2``)
    builds a TLS context per client: three CA-bundle parses per call (262-379 ms each in
    a job loop during a burst, measured by the worker's loop monitor). This one shares the process's context
    (``services.tls``). The key and base URL come from ``OPENAI_API_KEY`` and
    ``OPENAI_BASE_URL``, as the plugins' own clients would read them."""
    http = httpx2.AsyncClient(
        timeout=OPENAI_TIMEOUT,
        follow_redirects=True,
        verify=client_ssl_context(),
        limits=httpx2.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120),
    )
    return openai_sdk.AsyncOpenAI(max_retries=0, http_client=http)


ROOM_OPTIONS = room_io.RoomOptions(text_output=room_io.TextOutputOptions(sync_transcription=False))
"""The agent's transcript goes out as soon as it is known, not word by word with its
audio. livekit's synchronizer estimates the speaking rate with an STFT on the job's event
loop: its loop monitor caught it blocking a job loop for up to 516 ms with 8 calls on a
2-CPU host, and every call on that loop waits meanwhile (``docs/voice.md``)."""


CLOSE_TRANSCRIPT_TIMEOUT_SECONDS = 0.5
"""How long a closing session waits for the STT's last transcript (livekit's default: 2 s).
A session closes when the caller hangs up, and until it has closed the job holds its slot:
the worker turned callers away for those 2 s of every call (``docs/voice.md``). Nothing
reads a transcript that arrives after the caller left; half a second keeps one already on
its way."""


def local_turn_handling(*, realtime: bool) -> TurnHandlingOptions:
    """Turn handling that runs on this host in ``dev`` and ``start`` alike.

    The pipeline commits a turn with the local ``v1-mini`` end-of-turn model (livekit
    picks the cloud ``v1`` in dev mode when no version is given); a realtime model commits
    with the provider's server-side turn detection. Interruptions are detected by the VAD:
    adaptive interruption detection is a LiveKit Cloud model (on by default in dev mode)."""
    return {
        "turn_detection": "realtime_llm" if realtime else inference.TurnDetector(version="v1-mini"),
        "interruption": {"mode": "vad"},
    }


def openai_session(result: PromptResult, *, client: openai_sdk.AsyncOpenAI | None = None) -> SessionPlan:
    """A realtime model or an STT/LLM/TTS pipeline, as ``config.pipeline`` says.

    The pipeline's LLM sends ``prompt_cache_key`` (one per agent version, see
    :mod:`agent.sessions.provider_cache`); the system prompt is the agent's instructions, the first
    message of every request and the same bytes for a version. The realtime API takes no
    such key (it caches within a session) and no temperature. Both get a TTS, so a
    greeting missing from the cache is spoken by ``session.say`` without the LLM (a
    realtime session speaks its replies with its own audio). ``client`` is the test seam
    for the session's HTTP traffic; when not given, the job's client is closed at its end.
    """
    voice = VoiceOptions.from_config(result.agent.config, agent_id=result.agent.agent_id)
    own_client = client is None
    http_client = client if client is not None else openai_client()
    tts = openai.TTS(model=voice.tts_model, voice=voice.voice, response_format="pcm", client=http_client)
    vad = inference.VAD(model="silero")
    if voice.pipeline == "realtime":
        realtime = openai.realtime.RealtimeModel(model=voice.llm_model, voice=voice.voice)
        session: AgentSession[None] = AgentSession(
            llm=realtime,
            tts=tts,
            vad=vad,
            turn_handling=local_turn_handling(realtime=True),
            session_close_transcript_timeout=CLOSE_TRANSCRIPT_TIMEOUT_SECONDS,
        )
    else:
        key = prompt_cache_key(result.agent.agent_id, result.updated_at)
        llm = (
            openai.LLM(model=voice.llm_model, prompt_cache_key=key, client=http_client)
            if voice.temperature is None
            else openai.LLM(
                model=voice.llm_model, prompt_cache_key=key, client=http_client, temperature=voice.temperature
            )
        )
        session = AgentSession(
            stt=openai.STT(model=voice.stt_model, language=voice.language, use_realtime=True, client=http_client),
            llm=llm,
            tts=tts,
            vad=vad,
            turn_handling=local_turn_handling(realtime=False),
            session_close_transcript_timeout=CLOSE_TRANSCRIPT_TIMEOUT_SECONDS,
        )
    closers: list[Callable[[], Coroutine[Any, Any, None]]] = [http_client.close] if own_client else []
    return SessionPlan(session, room_options=ROOM_OPTIONS, voice=voice, closers=closers)
