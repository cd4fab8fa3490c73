"""Secrets out of what the integration shows (diagnostics), wherever in the data they are.

A site document carries secrets in places no fixed list of keys names: the broker's login, and
whatever a user puts in a service's action data (`token`, an `Authorization` header, a webhook
URL with a password or a `?token=` in it). `redact` walks the data and replaces:

- the value of every key that names a secret: its name, case-insensitive, contains one of
  `SECRET_WORDS` (`access_token`, `X-Auth-Token`, `client_secret`, `Cookie`...), or its last word
  is `key` (`key`, `api_key`, `client_key`, `accessKey`), unless the word before it names a thing
  of the site (`outlet_key`, `service_key`: an id, not a secret);
- in every text, the user name and password of a URL (`https://user:pass@host`), the value of
  each query or fragment parameter whose name names a secret (`?token=...`), and what follows
  `Bearer` (a header written out as text);
- and the keys in `always`: what is no secret but points a stranger at the site (`host`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "**REDACTED**"
SECRET_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "auth",
    "cookie",
    "credential",
    "private",
    "bearer",
)
# `<thing>_key` names the thing's id (the key an outlet is found by), not a secret.
ID_KEY_OWNERS = frozenset(
    {"outlet", "service", "ups", "pdu", "node", "device", "entity", "unique", "translation"}
)
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"\b(bearer)\s+[^\s'\",]+", re.IGNORECASE)


def is_secret_key(name: str) -> bool:
    """Whether a key of that name holds a secret (the module's rule)."""
    lowered = name.lower()
    if any(word in lowered for word in SECRET_WORDS):
        return True
    words = [w.lower() for w in _WORDS.findall(name)]
    return (
        bool(words) and words[-1] == "key" and (len(words) == 1 or words[-2] not in ID_KEY_OWNERS)
    )


def redact(data: Any, always: Iterable[str] = ()) -> Any:
    """A copy of `data` with every secret (and every key of `always`) replaced by `REDACTED`."""
    keep_out = frozenset(always)
    return _redact(data, keep_out)


def _redact(data: Any, always: frozenset[str]) -> Any:
    if isinstance(data, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and (key in always or is_secret_key(key))
            else _redact(value, always)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [_redact(item, always) for item in data]
    if isinstance(data, str):
        text = _URL.sub(lambda match: _redact_url(match.group()), data)
        return _BEARER.sub(rf"\1 {REDACTED}", text)
    return data


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL after all (an unclosed IPv6 bracket)
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{REDACTED}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            _redact_params(parts.query),
            _redact_params(parts.fragment),
        )
    )


def _redact_params(text: str) -> str:
    """`a=1&token=x` with the secret values redacted; as it was when none is."""
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(is_secret_key(name) for name, _ in pairs):
        return text
    return urlencode(
        [(name, REDACTED if is_secret_key(name) else value) for name, value in pairs], safe="*"
    )
