"""``python -m devtools.openai_standin``: serve until SIGTERM/SIGINT; prints ``ready <base url>``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

from devtools.openai_standin.app import build_app
from devtools.openai_standin.config import (
    DEFAULT_LLM_TTFT_MS,
    DEFAULT_STT_DELAY_MS,
    DEFAULT_TOKENS_PER_SECOND,
    DEFAULT_TTS_TTFB_MS,
    StandinConfig,
    read_phrases,
)
from services.logging import configure_logging


def parse_args(argv: list[str] | None = None) -> tuple[int, StandinConfig]:
    parser = argparse.ArgumentParser(prog="python -m devtools.openai_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the printed one)")
    parser.add_argument("--stt-delay-ms", type=float, default=DEFAULT_STT_DELAY_MS)
    parser.add_argument("--llm-ttft-ms", type=float, default=DEFAULT_LLM_TTFT_MS)
    parser.add_argument("--tts-ttfb-ms", type=float, default=DEFAULT_TTS_TTFB_MS)
    parser.add_argument("--tokens-per-second", type=float, default=DEFAULT_TOKENS_PER_SECOND)
    parser.add_argument("--phrases", type=Path, help="extra phrases to recognise, one per line")
    args = parser.parse_args(argv)
    try:
        config = StandinConfig(
            stt_delay_ms=args.stt_delay_ms,
            llm_ttft_ms=args.llm_ttft_ms,
            tts_ttfb_ms=args.tts_ttfb_ms,
            tokens_per_second=args.tokens_per_second,
            phrases=read_phrases(args.phrases) if args.phrases else (),
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    return args.port, config


async def serve(port: int, config: StandinConfig) -> None:
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1] if port == 0 else port
    print(f"ready http://127.0.0.1:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    port, config = parse_args(argv)
    configure_logging(level="INFO")
    asyncio.run(serve(port, config))
    sys.exit(0)


if __name__ == "__main__":
    main()
