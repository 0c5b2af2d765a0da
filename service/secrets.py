"""Values that must never print: webhook secrets, tokens, keys, and URLs that may carry a password.

A `Secret` renders as `***` in `repr`, `str` and f-strings, so a careless log line, an error
message or a traceback that prints a Settings object cannot leak it; code that needs the value
asks for it explicitly with `reveal()`. A `SecretUrl` renders as the URL with its password
masked (`postgresql://app:***@db:5432/orders`), which is what a log line or an error should show.
"""

from __future__ import annotations

import hmac
from typing import Final
from urllib.parse import urlsplit, urlunsplit

MASK: Final = "***"


class Secret:
    """A string that is read only through `reveal()`; everything else shows `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a secret must be a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value itself: for the one place that uses it (a signer, a driver, a client)."""
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, _spec: str) -> str:
        return str(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # Explicit: a Secret may cross a process boundary (it is a value, not a handle).
        return (type(self), (self._value,))


class SecretUrl(Secret):
    """A connection URL: shown with its password (and only its password) masked."""

    __slots__ = ()

    def masked(self) -> str:
        return mask_url_password(self._value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked()!r})"

    def __str__(self) -> str:
        return self.masked()


def mask_url_password(url: str) -> str:
    """The URL with any password replaced by `***`; a URL that cannot be parsed is masked whole."""
    try:
        parts = urlsplit(url)
        password = parts.password
        host = parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    if password is None:
        return url
    user = parts.username or ""
    if host is not None and ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    location = f"{user}:{MASK}@{host or ''}"
    if port is not None:
        location += f":{port}"
    return urlunsplit(parts._replace(netloc=location))
