"""One log stream: the project's structlog events and the standard library's records
(livekit-agents' own, with their ``extra=`` fields) rendered by the same processors.

JSON lines in production; coloured, readable lines on a terminal. Call
:func:`configure_logging` once at start-up (the worker's ``main`` does), never at import.

The project's events do not go through the standard library: a stdlib record costs
``makeRecord``, handler dispatch and ``ProcessorFormatter`` (about 40 us, most of a RAM
hit). They run structlog's processors directly in :class:`EventLogger` (cached on first
use) and the rendered line is written to the root handler's stream under that handler's
lock, so both kinds of line share one stream and never interleave. Level, renderer and
stream live in one holder that :func:`configure_logging` updates, so a logger cached
before a reconfiguration follows it.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import sys
import time
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger


@functools.lru_cache(maxsize=128)
def prompt_fingerprint(prompt: str) -> str:
    """What logs carry instead of a prompt: a short hash that still tells versions apart.

    Memoized for the hot agents' prompts (a string's hash is cached in the string, so a
    repeat costs a lookup, not a SHA-256 over the whole prompt).
    """
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def _json_default(value: object) -> object:
    """What JSON cannot hold, as structlog's ``JSONRenderer`` writes it."""
    to_structlog = getattr(value, "__structlog__", None)
    return to_structlog() if callable(to_structlog) else repr(value)


# json.dumps(value, default=...) builds an encoder per call; this one is built once.
# markers=None: no circular check (an event dict is built per call), as fast as C gets.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode = (
    None
    if _make_encoder is None
    else _make_encoder(None, _json_default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
)


def render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """``JSONRenderer``'s output (``json.dumps`` with ``repr`` for what JSON cannot hold)."""
    if _encode is None:  # a Python without the C accelerator
        return json.dumps(event_dict, default=_json_default)
    return "".join(_encode(event_dict, 0))


class _IsoTimestamp:
    """``TimeStamper(fmt="iso", utc=True)``'s text (``2026-11-29T06:09:44.123456Z``), the
    date and time formatted once per second instead of per event."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = self.now()
        return event_dict

    def now(self) -> str:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            stamp = datetime.datetime.fromtimestamp(second, tz=datetime.UTC)
            self._prefix = stamp.strftime("%Y-%m-%dT%H:%M:%S.")
            self._second = second
        return f"{self._prefix}{nanos // 1000:06d}Z"


class _LevelNameTime(_IsoTimestamp):
    """``add_log_level``, ``add_logger_name`` and the timestamp in one step, for the
    project's own events (whose method name already is the level's name)."""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["level"] = method_name
        event_dict["logger"] = getattr(logger, "name", "")
        event_dict["timestamp"] = self.now()
        return event_dict


def _drop_copied_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A record forwarded from a job process carries its text twice (``message``)."""
    if event_dict.get("message") == event_dict.get("event"):
        event_dict.pop("message", None)
    return event_dict


def _format_exc_info(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if "exc_info" not in event_dict:  # the common case, without a call into structlog
        return event_dict
    return structlog.processors.format_exc_info(logger, method_name, event_dict)


def _render_json_line(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    return render_json(logger, method_name, _format_exc_info(logger, method_name, event_dict))


class _Output:
    """What :func:`configure_logging` decided: minimum level, renderer, destination."""

    def __init__(self) -> None:
        self.level = logging.INFO
        self.handler: logging.StreamHandler[Any] | None = None
        self.render: structlog.types.Processor = structlog.processors.JSONRenderer()


_output = _Output()


def _render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    return _output.render(logger, method_name, event_dict)


class LineWriter:
    """structlog's final logger: writes each rendered line to the root handler's stream."""

    def __init__(self, name: str = "") -> None:
        self.name = name  # read by ``add_logger_name``

    def msg(self, message: str) -> None:
        # Like a logging handler, never raise into the caller: a closed or broken stream
        # costs the line, not the call that logged it.
        handler = _output.handler
        try:
            if handler is None:  # not configured (a library use, a test): stderr as is
                sys.stderr.write(message + "\n")
                return
            with handler.lock:  # type: ignore[union-attr]  # always set by StreamHandler
                handler.stream.write(message + "\n")
                handler.stream.flush()
        except (OSError, ValueError):
            return

    debug = info = warning = warn = error = critical = exception = fatal = msg


def _line_writer(*args: Any) -> LineWriter:
    return LineWriter(str(args[0]) if args else "")


class EventLogger(structlog.BoundLoggerBase):
    """A bound logger that filters on the configured level before doing any work."""

    def _at(self, level: int, method: str, event: str | None, kw: dict[str, Any]) -> Any:
        if level < _output.level:
            return None
        return self._proxy_to_logger(method, event, **kw)

    def debug(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.DEBUG, "debug", event, kw)

    def info(self, event: str | None = None, **kw: Any) -> Any:
        # The hot path's level, inlined; then structlog's ``_process_event`` without its
        # handling of processors that return tuples (none here).
        if _output.level > logging.INFO:
            return None
        event_dict: Any = self._context.copy()
        event_dict.update(kw)
        event_dict["event"] = event
        try:
            for processor in self._processors:
                event_dict = processor(self._logger, "info", event_dict)
        except structlog.DropEvent:
            return None
        return self._logger.info(event_dict)

    def warning(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.WARNING, "warning", event, kw)

    warn = warning

    def error(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.ERROR, "error", event, kw)

    def exception(self, event: str | None = None, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._at(logging.ERROR, "error", event, kw)

    def critical(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.CRITICAL, "critical", event, kw)

    fatal = critical


def configure_logging(*, json_logs: bool | None = None, level: int | str = logging.INFO) -> None:
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _IsoTimestamp(),
    ]
    renderer: structlog.types.Processor = render_json if json_logs else structlog.dev.ConsoleRenderer()
    finish: list[structlog.types.Processor] = [
        _format_exc_info if json_logs else structlog.processors.StackInfoRenderer(),
        renderer,
    ]
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_copied_message],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become records of the same stream
    # asyncio's DEBUG records ("Using selector: EpollSelector") are noise at any level.
    logging.getLogger("asyncio").setLevel(max(logging.INFO, root.level))

    def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        for processor in finish:
            event_dict = processor(logger, method_name, event_dict)  # type: ignore[assignment]
        return event_dict

    _output.render = _render_json_line if json_logs else render
    _output.handler = handler
    _output.level = root.level
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _LevelNameTime(), _render],
        logger_factory=_line_writer,
        wrapper_class=EventLogger,
        cache_logger_on_first_use=True,
    )


def forward_events_to_the_worker() -> None:
    """For a job process (PROCESS executor): send the project's events as standard
    records, whose ``extra=`` fields are the event's fields.

    livekit-agents gives a job process one root handler that ships each record to the
    worker's main process, where :func:`configure_logging`'s handler renders it; so the
    job's ``prompt_resolved`` and ``job_timings`` come out of the worker in the same
    stream and format as everything else. Call it in the job process before it logs.
    """
    logging.captureWarnings(True)  # the job process's warnings take the same way
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
