"""A logging filter that keeps secrets out of every log line, whoever wrote it.

Quorum's own code logs no secret; this catches what libraries might (botocore's request headers
at DEBUG, a path with a sign-up token in a "Not Found" warning, a traceback quoting a password):
authorization headers, API tokens, password-like fields, the tokens in sign-up and study links,
and the configured secret values themselves.
"""

from __future__ import annotations

import logging
import os
import re

from django.conf import settings

REDACTED = "[redacted]"
PATTERNS = [
    # Authorization: Token … / Bearer … / AWS4-HMAC-SHA256 … (headers, dict reprs, raw HTTP).
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n]+"),
    re.compile(r"(?i)\b((?:token|bearer)\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # password=…, "secret": "…", csrfmiddlewaretoken=…, sessionid=… (forms, JSON, cookies).
    re.compile(
        r"(?i)((?:password\d?|passwd|secret(?:_key|_access_key)?|token|api_key"
        r"|csrfmiddlewaretoken|csrftoken|sessionid)['\"]?\s*[:=]\s*b?['\"]?)[^\s'\"&,;}]+"
    ),
    # Sign-up links and study links carry their token in the path.
    re.compile(r"(/join/)[^/\s?'\"]+"),
    re.compile(r"(/ext/link/[^/\s]+/)[^/\s?'\"]+"),
    # API token keys: 40 hex digits (also when a presented key has more characters after them).
    re.compile(r"()(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])"),
]
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
MIN_SECRET_LENGTH = 8


def _secrets() -> list[str]:
    values = [str(getattr(settings, "SECRET_KEY", "")), *map(os.environ.get, SECRET_VARIABLES)]
    return [v for v in values if v and len(v) >= MIN_SECRET_LENGTH]


def redact(text: str) -> str:
    """The text with every secret-looking value replaced by [redacted]."""
    for secret in _secrets():
        text = text.replace(secret, REDACTED)
    for pattern in PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback and stack with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
