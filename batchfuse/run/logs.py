"""Run logs: ``--log-file PATH`` and ``--log-format text|json``.

One line per attempt (item, attempt, status, class, latency, outputs) and per change of the
run's state (start, stopping, paused, rate lowered, end).  Every line passes through
:func:`batchfuse.errors.scrub`, so a key that slipped into a message never reaches the file, and
text lines have their control characters escaped, so an item id or an API message with a
newline in it cannot forge a line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from batchfuse.errors import InputError, printable, scrub

#: Attributes every LogRecord has; anything else came in through ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = ()
        return True


class TextFormatter(logging.Formatter):
    """``fmt`` with the message's control characters escaped: one event, one line."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        return scrub(json.dumps(entry, ensure_ascii=False, default=str))


def configure(log_file: Path | None = None, fmt: str = "text", debug: bool = False) -> None:
    """Warnings to stderr; with ``log_file``, every run event (INFO and up) to that file."""
    root = logging.getLogger("batchfuse")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if debug else logging.WARNING)
    console.setFormatter(TextFormatter("%(levelname)s: %(message)s"))
    console.addFilter(ScrubFilter())
    root.addHandler(console)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--log-file {log_file}: cannot write there: {exc.strerror or exc}") from None
        handler.setLevel(logging.INFO)
        handler.addFilter(ScrubFilter())
        handler.setFormatter(
            JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(message)s")
        )
        root.addHandler(handler)
