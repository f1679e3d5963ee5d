"""Logs mask every configured secret, whatever logger wrote them and whenever it was made."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from agent import logs

EARLY = logs.get_logger("early")  # made at import, before configure(), like module loggers


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_module_level_logger_masks_secrets_and_follows_configure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.register_secrets(["hunter2-secret", "hunter2"])
    logs.configure("info", "json")
    EARLY.info("login", note="pw is hunter2-secret then hunter2", password="plain")
    EARLY.debug("not shown at info")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    assert lines[0]["note"] == "pw is *** then ***"
    assert lines[0]["password"] == "***"
    assert lines[0]["component"] == "early"


def test_redact_text_masks_the_longest_secret_whole() -> None:
    logs.register_secrets(["abcdefgh", "abcdefghij"])
    assert logs.redact_text("x abcdefghij y abcdefgh z") == "x *** y *** z"
    assert logs.redact_text("nothing here") == "nothing here"


def test_short_values_are_not_masked_as_words() -> None:
    logs.register_secrets(["admin"])  # the Whatsminer factory password
    assert logs.redact_text("wrong admin password") == "wrong admin password"
