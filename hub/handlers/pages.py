"""HTML pages: home, spawn, spawn-pending, "server not running", proxy error pages, redirects.

State changes happen only on ``POST`` (XSRF token and same-site checked by :class:`BaseHandler`)
or through the REST API from ``static/js``; every ``GET`` here renders or redirects.

Requests for ``<base_url>user/<name>/...`` reach the hub only when the proxy has no route for
that server, i.e. it is not running. The hub login cookie is scoped to ``<base_url>hub/``, so the
hub cannot tell who is asking at ``/user/...``: :class:`UserRedirectHandler` answers API requests
with 424 JSON right away and sends browsers to ``<base_url>hub/user/...``, where
:class:`UserUrlHandler` knows the caller and shows the owner a 424 page with a Start button.
Nothing there redirects back to ``/user/...`` automatically, so there is no redirect loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http.client import responses
from typing import Any
from urllib.parse import urlencode

from hub.db.database import transaction
from hub.handlers.base import PAGE_CSP, BaseHandler, HubError
from hub.handlers.errors import write_json_error
from hub.services import names, profiles, users
from hub.services import scopes as sc
from hub.services import servers as srv
from hub.services.server_names import server_prefix

log = logging.getLogger(__name__)

#: Pages load only our own scripts and styles (no inline code); Bootstrap's CSS uses data: SVGs.
PROXY_ERRORS = {
    404: "There is nothing at this address.",
    503: "The server behind this address is not responding. If it is yours, "
         "stop and start it again from the Home page.",
}


# --- views handed to templates ------------------------------------------------------------------
@dataclass(frozen=True)
class ServerView:
    """What a page shows about one server: its state and the URLs around it (all encoded)."""

    user: str
    name: str  # "" for the default server
    ready: bool
    pending: str | None  # "spawn", "stop" or None
    started: bool  # the database says it was started (and not yet seen stopped)
    failure: str | None  # user-facing message of the last failed start
    base_url: str
    may_start: bool = False  # the caller may start (and stop) it
    stop_reason: str | None = None  # why it stopped by itself (a crash), until the next start

    @property
    def status(self) -> str:
        """``starting``, ``stopping``, ``running`` or ``stopped``."""
        if self.pending == "spawn":
            return "starting"
        if self.pending == "stop":
            return "stopping"
        return "running" if self.ready or self.started else "stopped"

    @property
    def running(self) -> bool:
        return self.status != "stopped"

    def _path(self) -> str:
        """``<name>/[<server>/]``, encoded like the server's own prefix."""
        return server_prefix("/", self.user, self.name)[len("/user/"):]

    @property
    def url(self) -> str:
        """``<base_url>user/<name>/[<server>/]`` — where the server lives."""
        return server_prefix(self.base_url, self.user, self.name)

    @property
    def spawn_url(self) -> str:
        return f"{self.base_url}hub/spawn/{self._path()}".rstrip("/")

    @property
    def pending_url(self) -> str:
        return f"{self.base_url}hub/spawn-pending/{self._path()}".rstrip("/")


@dataclass(frozen=True)
class UserView:
    """The logged-in user as ``home.html`` sees it (``user.running`` etc.)."""

    name: str
    admin: bool
    server: ServerView

    @property
    def running(self) -> bool:
        return self.server.running


# --- shared behaviour -----------------------------------------------------------------------------
def user_path_is_api(local: str) -> bool:
    """Whether ``[hub/]user/<name>/<rest>`` points at a server's API (``.../api/...``)."""
    local = local.removeprefix("hub/").removeprefix("user/")
    rest = local.partition("/")[2]
    return "/api/" in f"/{rest}/"


class PageHandler(BaseHandler):
    """Base of the HTML pages: strict CSP, server lookups, JSON errors for API-like requests."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", PAGE_CSP)

    @property
    def xsrf_token(self) -> bytes:
        """The login session's token, or nothing: these pages never mint Tornado's cookie token.

        Minting it here would replace the login form's ``_xsrf`` cookie whenever a page without
        that cookie renders (a browser's ``/favicon.ico`` 404 did), failing the next login.
        """
        bound = self._session_xsrf()
        return bound.encode() if bound is not None else b""

    @property
    def manager(self) -> srv.ServerManager:
        return self.hub.servers

    @property
    def local_path(self) -> str:
        """The request path after ``<base_url>`` (still URL-encoded)."""
        return self.request.path[len(self.base_url):]

    def accepts_html(self) -> bool:
        return "text/html" in self.request.headers.get("Accept", "")

    def wants_json(self) -> bool:
        """API paths and clients asking for JSON (not HTML) get the JSON error shape."""
        if self.local_path.startswith("hub/api/"):
            return True
        return not self.accepts_html() and "json" in self.request.headers.get("Accept", "")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.wants_json():
            write_json_error(self, status_code, **kwargs)
        else:
            super().write_error(status_code, **kwargs)

    def load_server(self, name: str, server_name: str, needed: str) -> ServerView:
        """The state of ``name``'s server, if the caller holds ``needed`` on it.

        404 when the caller may not even see the user (or the name is invalid), 403 when they
        may see it but not do ``needed``.
        """
        if server_name:
            try:
                names.validate_server_name(server_name)
            except names.NameError_:
                raise HubError(404, "No such server") from None
        assert self.identity is not None
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            if user is None:
                raise HubError(404, "No such user")
            res = sc.Resource(user=user.name, server=f"{user.name}/{server_name}",
                              user_groups=frozenset(g.name for g in user.groups))
            if not self.identity.can(needed, res):
                if self.identity.can("read:servers", res):
                    raise HubError(403, "You may not do that with this server")
                raise HubError(404, "No such user")
            row = next((s for s in user.servers if s.name == server_name), None)
            canonical, started = user.name, row is not None and row.started is not None
            may_start = self.identity.can("servers", res)
        mgr = self.manager
        return ServerView(
            user=canonical, name=server_name, started=started, may_start=may_start,
            ready=bool(mgr.is_ready(canonical, server_name)),
            pending=mgr.pending(canonical, server_name),
            failure=mgr.failure_message(canonical, server_name), base_url=self.base_url,
            stop_reason=mgr.stop_message(canonical, server_name),
        )

    def next_for(self, view: ServerView, raw: str | None = None) -> str:
        """``raw`` (default: ``next=``) if it is a local path inside ``view``'s server.

        Otherwise the server's own URL: these pages only ever forward to the server.
        """
        if raw is None:
            raw = self.get_argument("next", None)
        safe = names.safe_next_url(raw, "")
        return safe if safe.startswith(view.url) else view.url

    def not_running_page(self, view: ServerView, status: int, message: str = "",
                         next_url: str | None = None) -> None:
        """The "server not running" page, with a Start form when the caller may start it."""
        nxt = self.next_for(view, next_url)
        query = "?" + urlencode({"next": nxt}) if nxt != view.url else ""
        self.set_status(status)
        self.finish(self.render_template(
            "not_running.html", server=view, owner=view.user, server_name=view.name,
            state=view.status, spawn_url=view.spawn_url + query, can_start=view.may_start,
            retry_url=nxt, message=message))


# --- handlers -------------------------------------------------------------------------------------
class RootRedirectHandler(PageHandler):
    """``<base_url>`` and ``<base_url>hub/`` → ``<base_url>hub/home`` (which asks to log in)."""

    public = True

    def get(self) -> None:
        self.redirect(self.hub_prefix + "home")


class HomeHandler(PageHandler):
    """The user's home: the default server's state, Start or "My Server" + Stop."""

    def get(self) -> None:
        assert self.identity is not None
        view = self.load_server(self.identity.name, "", "read:servers")
        link = view.pending_url if view.status == "starting" else view.url
        failure = view.failure if view.status == "stopped" else None
        stop_reason = view.stop_reason if view.status == "stopped" else None
        spawner = self.manager.spawner(self.identity.name, "")
        notices = spawner.notices() if spawner is not None and view.status == "running" else []
        self.finish(self.render_template(
            "home.html", user=UserView(self.identity.name, self.identity.admin, view),
            server=view, server_link=link, spawn_url=view.spawn_url, failure=failure,
            stop_reason=stop_reason,
            notices=notices))


class SpawnHandler(PageHandler):
    """``GET`` shows a Start form (or redirects when started); ``POST`` starts the server."""

    def _view(self, name: str | None, server_name: str, needed: str) -> ServerView:
        assert self.identity is not None
        return self.load_server(name or self.identity.name, server_name, needed)

    def _pending_redirect(self, view: ServerView, status: int = 302) -> None:
        nxt = self.next_for(view)
        query = "?" + urlencode({"next": nxt}) if nxt != view.url else ""
        self.redirect(view.pending_url + query, status=status)

    def get(self, name: str | None = None, server_name: str = "") -> None:
        view = self._view(name, server_name, "read:servers")
        if view.ready:
            self.redirect(self.next_for(view))
        elif view.status == "starting":
            self._pending_redirect(view)
        elif view.may_start and profiles.parse(self.hub.config.profiles):
            self._options_form(view, 200)
        else:
            self.not_running_page(view, 200)

    def _options_form(self, view: ServerView, status: int, error: str = "",
                      chosen: dict[str, Any] | None = None) -> None:
        """The spawn form: the JSON Schema of the user's profiles as Bootstrap fields, the
        last choice preselected."""
        found = profiles.parse(self.hub.config.profiles)
        with transaction(self.hub.db) as session:
            owner = users.require(session, view.user)
            groups = {g.name for g in owner.groups}
            last = chosen or users.last_options(owner, view.name) or {}
        nxt = self.next_for(view)
        query = "?" + urlencode({"next": nxt}) if nxt != view.url else ""
        self.set_status(status)
        self.finish(self.render_template(
            "spawn.html", server=view, owner=view.user, server_name=view.name,
            schema=profiles.schema_for(found, groups), last=last, error=error,
            spawn_url=view.spawn_url + query))

    async def post(self, name: str | None = None, server_name: str = "") -> None:
        view = self._view(name, server_name, "servers")
        options: dict[str, Any] = {}
        found = profiles.parse(self.hub.config.profiles)
        if found:
            form = {k: self.get_body_argument(k) for k in self.request.body_arguments}
            if "profile" not in form:  # the home page's Start: show the form first
                self.redirect(self.request.uri or view.spawn_url, status=303)
                return
            request = profiles.from_form(found, form)
            with transaction(self.hub.db) as session:
                groups = {g.name for g in users.require(session, view.user).groups}
            try:
                options = profiles.resolve(found, groups, request)
            except profiles.ProfileError as e:
                self._options_form(view, 400, error=str(e), chosen=request)
                return
        try:
            await self.manager.start(view.user, view.name, options)
        except srv.AlreadyRunning:
            pass  # the pending page forwards to it
        except srv.TooManySpawns as e:
            raise HubError(429, "Too many users are starting servers right now; try again "
                                "shortly.", headers={"Retry-After": str(int(e.retry_after))},
                           ) from None
        self._pending_redirect(view, status=303)


class SpawnPendingHandler(PageHandler):
    """Progress bar fed by the progress event stream; forwards to the server when ready."""

    def get(self, name: str, server_name: str = "") -> None:
        view = self.load_server(name, server_name, "read:servers")
        nxt = self.next_for(view)
        if view.ready:
            self.redirect(nxt)
        elif view.status == "starting":
            self.finish(self.render_template(
                "spawn_pending.html", server=view, owner=view.user, server_name=view.name,
                server_url=view.url, next_url=nxt))
        else:
            msg = f"The server failed to start: {view.failure}" if view.failure else ""
            self.not_running_page(view, 200, message=msg)


class UserRedirectHandler(PageHandler):
    """``<base_url>user/...`` reached the hub: that server has no route (is not running).

    API requests get 424 JSON at once; browsers go to the same path under the hub prefix,
    where the login cookie identifies them. Nothing changes here, so there is no XSRF check.
    """

    public = True

    def wants_json(self) -> bool:
        return user_path_is_api(self.local_path) or not self.accepts_html()

    def prepare(self) -> None:
        if self.wants_json() or self.request.method not in ("GET", "HEAD"):
            raise HubError(424, "Server is not running")
        self.redirect(self.hub_prefix + (self.request.uri or "")[len(self.base_url):])


class UserUrlHandler(PageHandler):
    """``<base_url>hub/user/<name>/...``: explain why the server is not there.

    The owner (or anyone allowed to start it) gets a 424 page with a Start button; a server
    still starting sends them to its progress page; others get 404 (or 403 if they may see it).
    """

    def wants_json(self) -> bool:
        return user_path_is_api(self.local_path) or not self.accepts_html()

    def prepare(self) -> None:
        if self.wants_json():
            raise HubError(424, "Server is not running")
        super().prepare()

    def get(self, name: str, rest: str | None = None) -> None:
        view = self.load_server(name, self._server_name(name, rest or ""), "read:servers")
        original = self.base_url + (self.request.uri or "")[len(self.hub_prefix):]
        if view.status == "starting":
            query = urlencode({"next": self.next_for(view, original)})
            self.redirect(f"{view.pending_url}?{query}")
        elif view.status == "running":
            self.not_running_page(view, 503, next_url=original, message=(
                "Your server is running, but the proxy has no route to it yet. "
                "Try again in a few seconds."))
        else:
            self.not_running_page(view, 424, next_url=original, message=(
                f"The last start failed: {view.failure}" if view.failure else ""))

    def _server_name(self, name: str, rest: str) -> str:
        """The first path segment, if it names one of the user's servers, else ``""``."""
        first = rest.lstrip("/").split("/", 1)[0]
        if not first:
            return ""
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            if user is not None and any(s.name == first for s in user.servers):
                return first
        return ""


class ProxyErrorHandler(PageHandler):
    """``<base_url>hub/error/<code>?url=...``: the proxy's error target (CHP convention).

    Answers with that status code and an error page; ``url`` is not echoed back.
    """

    public = True

    def get(self, code: str) -> None:
        status = int(code) if 400 <= int(code) <= 599 else 404
        raise HubError(status, PROXY_ERRORS.get(status, responses.get(status, "Error")))


class NotFoundHandler(PageHandler):
    """Every unmatched path: a 404 page (JSON under the API prefix). Changes nothing."""

    public = True

    def prepare(self) -> None:
        self.identity = self.resolve_identity()  # for the navigation bar only
        raise HubError(404, "Not found" if self.wants_json() else "Page not found")


routes = [
    (r"^", RootRedirectHandler),
    (r"^hub", RootRedirectHandler),
    (r"", RootRedirectHandler),
    (r"home", HomeHandler),
    (r"spawn", SpawnHandler),
    (r"spawn/([^/]+)", SpawnHandler),
    (r"spawn/([^/]+)/([^/]+)", SpawnHandler),
    (r"spawn-pending/([^/]+)", SpawnPendingHandler),
    (r"spawn-pending/([^/]+)/([^/]+)", SpawnPendingHandler),
    (r"user/([^/]+)(/.*)?", UserUrlHandler),
    (r"error/(\d{3})", ProxyErrorHandler),
    (r"^user/.*", UserRedirectHandler),
]
