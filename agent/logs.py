"""Structured logs: JSON lines for the journal, readable lines on a terminal, secrets masked.

Every configured secret value is registered here; the last processor replaces any occurrence
of one in any logged value, so a secret that slips into an exception text is still masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO, cast


def _import_structlog() -> ModuleType:
    """structlog, without the `rich` it imports whenever rich is installed (4 MB with pygments).

    Rich would only format exceptions in the console renderer, and format_exc_info below turns
    every exception into text before any renderer sees it: rich is never used, in either format.
    """
    if "rich" in sys.modules:  # already paid for by whoever imported it
        import structlog
    else:
        # A None entry makes `import rich` fail the way a missing package does.
        sys.modules["rich"] = None  # type: ignore[assignment]
        try:
            import structlog
        finally:
            del sys.modules["rich"]
    return structlog


if TYPE_CHECKING:
    import structlog
else:
    structlog = _import_structlog()

MASK = "***"
MIN_MASKED_LENGTH = 6
SECRET_KEYS = frozenset({"password", "token", "api_key", "access_token", "secret", "passwd"})
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    global _pattern
    # Masking by value is the second line of defence (secrets are kept out of messages in the
    # first place); below 6 characters it would also hit ordinary words ("admin", the
    # Whatsminer factory password, would turn "wrong admin password" into nonsense).
    _secrets.update(v for v in values if v and len(v) >= MIN_MASKED_LENGTH)
    # One alternation, longest first (a secret containing another is masked whole), instead
    # of one scan per secret: a fleet has thousands of them.
    ordered = sorted(_secrets, key=len, reverse=True)
    _pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


def redact_text(text: str) -> str:
    return _pattern.sub(MASK, text) if _pattern is not None else text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: MASK if k in SECRET_KEYS else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = MASK if key in SECRET_KEYS else _redact_value(value)
    return event


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written, not when logging was configured."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def get_logger(name: str) -> Any:
    """A lazy logger: it takes the configuration (renderer, level, redaction) in force when it
    logs, so module-level loggers created before configure() still mask secrets."""
    return structlog.get_logger(name, component=name)
