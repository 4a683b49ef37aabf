"""What the server manager keeps per server, and the errors it raises.

Split from :mod:`hub.services.servers` (which re-exports the public names): the in-memory
:class:`Slot` of each (user, server), the :class:`Stored` row a restarted hub resumes from, the
:class:`Failure` a user sees, and the ``servers``-row helpers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub.db.models import APIToken, OAuthClient, Server, User
from hub.services.lifecycle import State
from hub.services.server_names import client_id
from hub.services.spawner import ProgressEvent, Spawner

log = logging.getLogger(__name__)


class ServerError(Exception):
    """Base of the manager's errors; ``str(e)`` is safe to show the user."""


class NoSuchUser(ServerError, LookupError):
    """The user does not exist."""


class AlreadyRunning(ServerError):
    """The server is already running, starting or stopping (``pending`` says which)."""

    def __init__(self, message: str, pending: str | None) -> None:
        super().__init__(message)
        self.pending = pending


class TooManySpawns(ServerError):
    """``concurrent_spawn_limit`` servers are already starting; retry after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many servers are starting right now; try again shortly")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Failure:
    """Why a start failed, or a server stopped by itself: ``message`` for its owner,
    ``reason`` (a short code) for logs and metrics.

    Failed starts: ``start_timeout``, ``http_timeout``, ``process_exited``, ``spawner_error``,
    ``proxy_error``, ``cancelled`` (stopped while starting), ``interrupted`` (the hub restarted
    during the start), ``error`` (unexpected). Stopped by itself: ``crashed`` (noticed by the
    poll loop), ``gone`` (ended while the hub was down).
    """

    message: str
    reason: str

    def event(self) -> ProgressEvent:
        return {"progress": 100, "failed": True, "message": self.message}


class StartFailed(Exception):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.failure = Failure(message, reason)


@dataclass(eq=False)
class Slot:
    """What the manager knows about one (user, server) in memory."""

    user: str
    server: str
    state: State = State.STOPPED
    why: Failure | None = None  # set in ``failed``, and when it stopped by itself
    spawner: Spawner | None = None
    target: str | None = None
    task: asyncio.Task[None] | None = None  # the start or stop under way
    events: list[ProgressEvent] = field(default_factory=list)  # of the latest start
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """Wake everyone waiting for a change (progress streams, wait_ready)."""
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def emit(self, progress: int, message: str, **extra: Any) -> None:
        last = self.events[-1]["progress"] if self.events else 0
        self.events.append({"progress": max(progress, last), "message": message, **extra})
        self.notify()

    @property
    def streaming(self) -> bool:
        """The latest start's progress stream has not ended yet."""
        return bool(self.events) and not is_final(self.events[-1])


@dataclass(frozen=True)
class Stored:
    """A ``servers`` row as :meth:`ServerManager.reattach` reads it."""

    user: str
    server: str
    state: State
    state_dict: dict[str, Any]
    options: dict[str, Any]
    why: Failure | None


def is_final(event: ProgressEvent) -> bool:
    return bool(event.get("ready") or event.get("failed"))


def exit_reason_of(spawner: Spawner) -> str | None:
    """The spawner's explanation of why its server ended, if it has one (never raises)."""
    try:
        return spawner.exit_reason()
    except Exception:
        log.exception("exit_reason of %r failed", spawner)
        return None


def server_row(session: Session, user: str, server: str) -> Server | None:
    return session.scalar(
        select(Server).join(Server.user).where(User.name == user, Server.name == server)
    )


def clear_row(session: Session, row: Server) -> None:
    """Stopped in the database: no start time, URL or spawner state; token and client revoked."""
    row.started, row.url, row.state = None, None, {}
    revoke_credentials(session, row.id, client_id(row.user.name, row.name))


def revoke_credentials(session: Session, server_id: int, cid: str) -> None:
    """Delete the server's API tokens (the hub's identity cache sees it) and OAuth client."""
    session.execute(delete(APIToken).where(APIToken.server_id == server_id,
                                           APIToken.kind == "server"))
    session.execute(delete(OAuthClient).where(OAuthClient.identifier == cid))
