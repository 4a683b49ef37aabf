"""The life of one user server as one explicit state, and the transitions it may take.

::

    stopped / failed ──start──▶ requested ──▶ starting ──▶ running
          ▲                        │              │            │
          │                        └──stop──▶ stopping ◀──stop/crash
          └──────────────────────────────────────┘
                 (starting ──failure──▶ stopping ──▶ failed)

``requested``: the row, token and OAuth client exist; the spawner has not been called.
``starting``: the spawner runs, then the hub waits for HTTP and adds the route.
``running``: ready and routed. ``stopping``: route, process, token and OAuth client go away.
``stopped``: nothing runs. ``failed``: the last start did not reach ``running`` (it has been
cleaned up like a stop). Every ``failed`` state, and a ``stopped`` one the server reached by
itself (a crash), carries a reason (:class:`hub.services.servers.Failure`). The state and its
reason are stored in the ``servers`` row, so a restarted hub resumes where it was. Pure logic.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where a server is in its life (stored as its value in ``servers.lifecycle``)."""

    REQUESTED = "requested"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def pending(self) -> str | None:
        """JupyterHub's ``pending`` field: ``"spawn"``, ``"stop"`` or None."""
        if self in (State.REQUESTED, State.STARTING):
            return "spawn"
        return "stop" if self is State.STOPPING else None

    @property
    def settled(self) -> bool:
        """Nothing is under way: running, stopped or failed."""
        return self in (State.RUNNING, State.STOPPED, State.FAILED)

    @property
    def down(self) -> bool:
        """Nothing runs and nothing is under way: a start may begin."""
        return self in (State.STOPPED, State.FAILED)


#: The allowed transitions; anything else is a bug in the server manager.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.REQUESTED}),
    State.FAILED: frozenset({State.REQUESTED}),
    State.REQUESTED: frozenset({State.STARTING, State.STOPPING}),
    State.STARTING: frozenset({State.RUNNING, State.STOPPING}),
    State.RUNNING: frozenset({State.STOPPING}),
    # ``failed``: a start that failed (or was cancelled) has been cleaned up.
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
}


class InvalidTransition(RuntimeError):
    """A transition that :data:`TRANSITIONS` does not allow (a bug, never a user error)."""


def check(old: State, new: State) -> None:
    """Raise :class:`InvalidTransition` unless ``old → new`` is allowed."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"a server cannot go from {old} to {new}")


def parse(value: str | None) -> State:
    """A stored state; an unknown value (a newer hub's) reads as ``stopped``."""
    try:
        return State(value or State.STOPPED)
    except ValueError:
        return State.STOPPED
