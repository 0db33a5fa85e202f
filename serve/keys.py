"""The server's API key: refused when it would turn authentication off by accident, compared in constant time.

`adafv serve --api-key "$KEY"` with KEY unset passes an empty string; an empty `ADAFV_API_KEY` does the same. Either
used to start a server with no key at all: now it is one line, exit code 2. A key travels in an HTTP header, so it
must be printable ASCII without spaces at its ends.
"""

from __future__ import annotations

import hmac

from adafv.errors import ConfigError


def check_api_key(key: str | None, source: str = "--api-key") -> str | None:
    """None (no key: the server is open) or a usable key; anything else is a ConfigError naming `source`."""
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{source} is empty: that would start the server without authentication; give a key, or "
                          f"{'unset ADAFV_API_KEY' if source == 'ADAFV_API_KEY' else 'leave --api-key out'} "
                          "for an open server")  # fmt: skip
    if key != key.strip() or not all(33 <= ord(c) < 127 for c in key):
        raise ConfigError(f"{source} must be printable ASCII without spaces (it travels in an HTTP header)")
    return key


def key_matches(key: str, authorization: str | None) -> bool:
    """Whether an Authorization header carries `key` as a bearer token; constant time in the header's content."""
    given = (authorization or "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, f"Bearer {key}".encode())
