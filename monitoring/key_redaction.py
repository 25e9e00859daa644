"""The platform's own API keys in log text: masked wherever they appear, not only after ``Bearer``.

A key pasted in a request body, a query string, an exception message or a repr of a header
dict is as much a credential as one in ``Authorization``. The prefix (``vhk_`` + 8
characters) stays: it names the key in the admin without being a secret (docs/gateway.md).
Registered in ``monitoring.logging``'s redaction table, so both log formats, messages,
arguments and tracebacks get it. Standard library only (settings import that module).
"""

from __future__ import annotations

import re

# vhk_<8 lowercase letters/digits>_<secret>; the secret is 43 url-safe characters today, but
# anything 16+ long after a prefix is masked (a truncated key is still most of a secret).
PLATFORM_KEY = re.compile(r"\b(vhk_[a-z0-9]{8})_[A-Za-z0-9_-]{16,}")
PLATFORM_KEY_MASK = r"\1_[REDACTED]"


def redact_platform_keys(text: str) -> str:
    return PLATFORM_KEY.sub(PLATFORM_KEY_MASK, text)
