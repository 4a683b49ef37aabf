"""Login throttling: a sliding window of failures per client address and per username.

Three counters: per (address, username) pair (strict), per address (looser: one address
guessing many accounts) and per username from anywhere (loosest: a distributed attack on one
account). An attacker at one address thus locks out only that pair, not the victim
everywhere. In-memory and bounded; a restarted hub forgets (acceptable: it slows brute
force, it is not an audit log).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

MAX_KEYS = 50_000


class LoginThrottle:
    """Counts failures per key within ``window`` seconds; over ``limit`` → retry-after."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def retry_after(self, ip: str, username: str, now: float | None = None) -> float:
        """Seconds to wait before another attempt is allowed (0 = allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key, limit in (
            (f"pair:{ip}:{username}", self.limit),
            (f"ip:{ip}", self.limit * 4),
            (f"user:{username}", self.limit * 10),
        ):
            q = self._recent(key, now)
            if len(q) >= limit:
                wait = max(wait, self.window - (now - q[-limit]))
        return wait

    def failed(self, ip: str, username: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in (f"ip:{ip}", f"user:{username}", f"pair:{ip}:{username}"):
            q = self._fails.setdefault(key, deque())
            q.append(now)
            self._fails.move_to_end(key)
        while len(self._fails) > MAX_KEYS:
            self._fails.popitem(last=False)

    def succeeded(self, ip: str, username: str) -> None:
        for key in (f"user:{username}", f"pair:{ip}:{username}"):
            self._fails.pop(key, None)
