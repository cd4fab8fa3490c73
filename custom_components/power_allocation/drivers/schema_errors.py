"""What a schema's error means, whichever validation library answers `import voluptuous`."""

from __future__ import annotations

import voluptuous as vol


def is_unknown_key(error: vol.Invalid) -> bool:
    """A key the schema does not know.

    voluptuous says "extra keys not allowed"; probatio, which Home Assistant 2026.11 installs as
    `voluptuous`, raises its `ExtraKeysInvalid` saying "not a valid option" (and "did you mean
    ...?" for a near miss).
    """
    return error.error_message == "extra keys not allowed" or (
        type(error).__name__ == "ExtraKeysInvalid"
    )
