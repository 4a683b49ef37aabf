"""The lifecycle of one proxied exchange as an explicit state machine, without I/O.

An :class:`~proxy.exchange.Exchange` is always in exactly one :class:`Phase`, and moves only
along :data:`TRANSITIONS` (:func:`check_transition` raises :class:`InvalidTransition`
otherwise). The happy path of a plain request is::

    ROUTING → CONNECTING → AWAITING → RECEIVING → HEAD → STREAMING → COMPLETE → DONE

with ``INTERIM`` looping back to ``RECEIVING`` for each ``1xx`` head, ``SWITCHING → TUNNEL``
for an accepted WebSocket handshake, ``AWAITING → CONNECTING`` for the one retry on a fresh
connection, and ``ERROR_PAGE → DONE`` whenever the proxy answers by itself. Every phase that
has not ended can go to ``DONE`` directly: the client may leave at any moment.

Keeping the phases explicit matters here more than anywhere: relaying a byte in the wrong
phase (a second response after a complete one, a body after a ``HEAD`` answer) desynchronises
the client connection, which is how response smuggling starts.
"""

from __future__ import annotations

import enum

__all__ = [
    "ENDED",
    "HOLDING",
    "IGNORING",
    "NOT_STARTED",
    "READING",
    "TRANSITIONS",
    "InvalidTransition",
    "Phase",
    "check_transition",
]


class Phase(enum.Enum):
    """Where an exchange stands; see the module docstring for the order."""

    ROUTING = "routing"  # created, maybe queued behind a pipelined request; not started
    CONNECTING = "connecting"  # waiting for a target connection; request body bytes are held
    AWAITING = "awaiting"  # request head sent; the target has not said a byte yet
    RECEIVING = "receiving"  # the target spoke; no response head begun (or between 1xx heads)
    HEAD = "head"  # parsing a response head
    INTERIM = "interim"  # a 1xx head was relayed; waiting for the end of its (empty) message
    SWITCHING = "switching"  # a 101 accepting the WebSocket handshake; the tunnel comes next
    BAD_SWITCH = "bad_switch"  # a 101 nobody asked for: the read ends in a 502
    STREAMING = "streaming"  # the final head is out; relaying the body
    COMPLETE = "complete"  # the target's answer is complete; anything more is not relayed
    ERROR_PAGE = "error_page"  # the proxy answers by itself (page maybe fetched first)
    DONE = "done"  # ended: ``exchange_done`` was called, or the client left
    TUNNEL = "tunnel"  # ended: both connections were handed to a WebSocket tunnel


_P = Phase

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _P.ROUTING: frozenset({_P.CONNECTING, _P.ERROR_PAGE, _P.DONE}),
    _P.CONNECTING: frozenset({_P.AWAITING, _P.ERROR_PAGE, _P.DONE}),
    # back to CONNECTING: a reused keep-alive connection closed before answering
    _P.AWAITING: frozenset({_P.RECEIVING, _P.CONNECTING, _P.ERROR_PAGE, _P.DONE}),
    _P.RECEIVING: frozenset({_P.HEAD, _P.ERROR_PAGE, _P.DONE}),
    # straight to COMPLETE: the answer to a HEAD request has no body
    _P.HEAD: frozenset(
        {_P.INTERIM, _P.SWITCHING, _P.BAD_SWITCH, _P.STREAMING, _P.COMPLETE, _P.ERROR_PAGE,
         _P.DONE}
    ),
    _P.INTERIM: frozenset({_P.RECEIVING, _P.ERROR_PAGE, _P.DONE}),
    _P.SWITCHING: frozenset({_P.TUNNEL, _P.DONE}),
    _P.BAD_SWITCH: frozenset({_P.ERROR_PAGE, _P.DONE}),
    _P.STREAMING: frozenset({_P.COMPLETE, _P.DONE}),
    _P.COMPLETE: frozenset({_P.DONE}),
    _P.ERROR_PAGE: frozenset({_P.DONE}),
    _P.DONE: frozenset(),
    _P.TUNNEL: frozenset(),
}

# request body bytes wait in the exchange until the target connection is there
HOLDING = frozenset({_P.ROUTING, _P.CONNECTING})
# the target connection is attached and its bytes go to the response parser
READING = frozenset({_P.AWAITING, _P.RECEIVING, _P.HEAD, _P.INTERIM, _P.STREAMING})
# nothing of a final answer went to the client yet: a failure can still become an error page
NOT_STARTED = frozenset({_P.AWAITING, _P.RECEIVING, _P.HEAD, _P.INTERIM, _P.BAD_SWITCH})
# parsed messages that follow are not relayed: after a complete answer, or after a 101
IGNORING = frozenset({_P.COMPLETE, _P.SWITCHING, _P.BAD_SWITCH})
ENDED = frozenset({_P.DONE, _P.TUNNEL})


class InvalidTransition(RuntimeError):
    """A move the state machine does not allow: a bug in the proxy, never the peer's fault."""


def check_transition(old: Phase, new: Phase) -> None:
    """Raise :class:`InvalidTransition` unless ``old → new`` is allowed."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"exchange cannot go from {old.name} to {new.name}")
