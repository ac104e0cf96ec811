"""An OpenAI stand-in: the real OpenAI clients (livekit-plugins-openai, the openai SDK)
against a local server that speaks their wire protocols, with real (espeak-ng) speech.

Run it with ``python -m devtools.openai_standin``; tests start it with
``devtools.processes.start_openai_standin``. See docs/openai-standin.md.
"""

from devtools.openai_standin.app import build_app
from devtools.openai_standin.config import StandinConfig

__all__ = ["StandinConfig", "build_app"]
