"""Errors that edgesdk reports to users.

An `EdgeSDKError` is an expected failure with a message a user can act on: the CLI prints it as
one `error:` line (plus a hint) and exits with its `exit_code`. Anything else is a bug and is
never swallowed.
"""

from __future__ import annotations

from pydantic import ValidationError


class EdgeSDKError(Exception):
    """Base class: an expected failure, reported without a traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserInputError(EdgeSDKError):
    """Bad input or usage: a file, a flag, a model or a profile the user gave us (exit 2)."""

    exit_code = 2


class ProfileError(UserInputError):
    """A device profile that cannot be read, validated or resolved."""


class UnknownDeviceError(UserInputError):
    """A device id that no profile provides."""


class CheckFailed(EdgeSDKError):
    """The input was fine but a check did not pass: verification, a budget (exit 1)."""

    exit_code = 1


def describe_validation_error(error: ValidationError) -> str:
    """Render pydantic's errors as `field.path: message` items on one line."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
