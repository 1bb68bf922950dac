"""Errors that edgesdk reports to users.

An `EdgeSDKError` is an expected failure with a message a user can act on: the CLI prints it as
one `error:` line (plus a hint) and exits with its `exit_code`. Anything else is a bug and is
never swallowed.
"""

from __future__ import annotations

import contextlib

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


class InternalError(EdgeSDKError):
    """A step of edgesdk's own failed on valid input: our fault, reported as a bug (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint or "this is a bug in edgesdk, please report it (rerun with --debug for the traceback)")


@contextlib.contextmanager
def our_step(step: str, origin: str):
    """Any failure inside ``step`` (run on the user's ``origin``, a file path) is ours: an
    ``InternalError`` saying ``step: origin: what happened``. A failure already told as an
    ``EdgeSDKError`` that names the step passes through unchanged."""
    try:
        yield
    except EdgeSDKError as exc:
        if exc.message.startswith(f"{step}: "):
            raise
        raise InternalError(f"{step}: {origin}: {exc.message}") from exc
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InternalError(f"{step}: {origin}: {type(exc).__name__}: {first}") from exc


class CheckFailed(EdgeSDKError):
    """The input was fine but a check did not pass: verification, a budget (exit 1)."""

    exit_code = 1


class DoesNotFit(CheckFailed):
    """The model does not fit the device's memory (its flash or RAM): nothing was written."""


def describe_validation_error(error: ValidationError) -> str:
    """Render pydantic's errors as `field.path: message` items on one line."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
