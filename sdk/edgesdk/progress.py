"""Progress of long steps, told to whoever listens (the CLI's bar on stderr).

A verb takes an ``on_stage`` callable and listens for its whole call with ``reporting``; code at
any depth (a layer loop in AdaRound, a sensitivity sweep) then says where it is with ``stage`` or
``counted``, without every function in between passing the callable along. A counted stage reads
``"<what> <done>/<total> <item>"`` (``COUNTED`` parses it), so a listener can draw a bar. A stage
inside a counted step comes after it and ``WITHIN``: "sensitivity 3/10 conv1 › calibrating...".

The listener lives in a context variable: threads started inside a verb do not see it; hand them
``relay()``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TypeVar

Listener = Callable[[str], None]
T = TypeVar("T")

WITHIN = " › "
COUNTED = re.compile(r"(?P<what>.+?) (?P<done>\d+)/(?P<total>\d+)(?: (?P<item>.*))?")

_LISTENER: ContextVar[Listener | None] = ContextVar("edgesdk_progress", default=None)
_STEP: ContextVar[str] = ContextVar("edgesdk_progress_step", default="")  # the counted step running now


def _ignore(text: str) -> None:
    pass


@contextlib.contextmanager
def reporting(on_stage: Listener | None) -> Iterator[None]:
    """Send the stages of the block to ``on_stage`` (None: keep the listener already set)."""
    if on_stage is None:
        yield
        return
    token = _LISTENER.set(on_stage)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def relay(prefix: str = "") -> Listener:
    """``stage`` as it is here and now (the listener, the step running), to call from any thread;
    ``prefix`` goes before each stage's text."""
    tell, step = _LISTENER.get() or _ignore, _STEP.get()
    return lambda text: tell(f"{step}{WITHIN}{prefix}{text}" if step else f"{prefix}{text}")


def stage(text: str) -> None:
    """Tell the listener, if any, that ``text`` is what runs now."""
    relay()(text)


def counted(items: Iterable[T], what: str, name: Callable[[T], str] | None = str) -> Iterator[T]:
    """``items``, telling the listener "<what> <n>/<total> <name(item)>" (no name with None) as
    each one starts."""
    items = list(items)
    outer = _STEP.get()
    try:
        for number, item in enumerate(items, 1):
            here = f"{what} {number}/{len(items)}" + (f" {name(item)}" if name else "")
            _STEP.set(outer)
            stage(here)
            _STEP.set(f"{outer}{WITHIN}{here}" if outer else here)
            yield item
    finally:
        # Set back, not reset by token: a generator may be closed in another context.
        _STEP.set(outer)
