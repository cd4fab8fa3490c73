"""`redact`'s rule: which keys hold secrets, and secrets inside texts (URLs, bearer tokens)."""

from __future__ import annotations

import pytest

from custom_components.power_allocation.redact import REDACTED, is_secret_key, redact


@pytest.mark.parametrize(
    "name",
    [
        "token", "access_token", "X-Auth-Token", "client_secret", "password", "passwd",
        "api_key", "apiKey", "ApiKey", "Authorization", "auth", "Cookie", "set-cookie",
        "credentials", "private_key", "bearer", "key", "client_key", "accessKey", "ssh-key",
    ],
)  # fmt: skip
def test_names_that_hold_secrets(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    ["outlet_key", "service_key", "translation_key", "keys", "keyboard", "monkey", "host", "id"],
)
def test_names_that_are_ids_or_plain(name: str) -> None:
    assert not is_secret_key(name)


def test_redacts_anywhere_in_nested_data_and_keeps_the_rest() -> None:
    data = {
        "services": [{"id": "db", "data": {"nested": [{"Token": "t"}, "plain"], "n": 3}}],
        "host": "10.0.0.5",
    }
    assert redact(data, always=("host",)) == {
        "services": [{"id": "db", "data": {"nested": [{"Token": REDACTED}, "plain"], "n": 3}}],
        "host": REDACTED,
    }


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("https://user:pass@host/x", f"https://{REDACTED}:{REDACTED}@host/x"),
        ("mqtt://user@host:1883", f"mqtt://{REDACTED}@host:1883"),
        ("http://h/p?a=1&token=abc", f"http://h/p?a=1&token={REDACTED}"),
        ("http://h/p?a=b%20c", "http://h/p?a=b%20c"),
        ("http://h/cb#access_token=abc", f"http://h/cb#access_token={REDACTED}"),
        ("-H 'Authorization: Bearer abc' http://h", f"-H 'Authorization: Bearer {REDACTED}' http://h"),
        ("see http://[::1 for details", f"see {REDACTED} for details"),
        ("no secret here", "no secret here"),
    ],
)  # fmt: skip
def test_redacts_secrets_inside_texts(text: str, redacted: str) -> None:
    assert redact({"note": text}) == {"note": redacted}
