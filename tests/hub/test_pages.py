"""The hub's HTML pages against a real hub (through the proxy, base URL with a space and ``@``).

Redirects, home, spawn and spawn-pending, the "not running" answers for ``/user/<name>/...``,
the proxy's error pages, the 404 handler, headers (CSP, no inline scripts) and escaping of
hostile usernames and ``next`` values. The module's hub spawns the tiny mock single-user server
(``tests/hub/mockserver.py``, "slow" mode): real processes, but quick. JupyterLab itself is
covered by the browser test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
import requests
from markupsafe import escape

from tests.hub import mockserver
from tests.hubproc import HubProcess, running

SPAWN_DELAY = 1.5
XSS_NAMES = ['"><img src=x onerror=alert(1)>', "<'&\">"]
TEMPLATES = Path(__file__).resolve().parents[2] / "share" / "jupyter" / "hub" / "templates"
STATIC_JS = Path(__file__).resolve().parents[2] / "static" / "js"
HTML = {"Accept": "text/html,application/xhtml+xml"}


def mock_config(path: Path, mode: str = "slow", delay: float = SPAWN_DELAY) -> Path:
    cmd, args = mockserver.command(mode, delay)
    path.write_text(f"singleuser_cmd = {json.dumps(cmd)}\nsingleuser_args = {json.dumps(args)}\n")
    return path


@pytest.fixture(scope="module")
def phub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data = tmp_path_factory.mktemp("pages")
    config = mock_config(data.parent / f"{data.name}.toml")
    yield from running(data, extra_args=["--config", str(config)])


# --- helpers ---------------------------------------------------------------------------------
def base_path(hub: HubProcess) -> str:
    """The encoded base path, e.g. ``/my%20hub@x/``."""
    return urlsplit(hub.url).path


def logged_in(hub: HubProcess, prefix: str = "pg", admin: bool = False
              ) -> tuple[str, requests.Session]:
    name, password = hub.new_user(prefix, admin=admin)
    return name, hub.login(name, password)


def add_named_user(hub: HubProcess, name: str, password: str = "correct horse 1"
                   ) -> requests.Session:
    done = hub.cli("users", "add", name, "--password-stdin", stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    return hub.login(name, password)


def server_state(hub: HubProcess, name: str) -> dict[str, object] | None:
    model = hub.api("GET", f"/users/{quote(name, safe='')}").json()
    servers: dict[str, dict[str, object]] = model.get("servers", {})
    return servers.get("")


def wait_ready(hub: HubProcess, name: str) -> None:
    hub.wait_for(lambda: (server_state(hub, name) or {}).get("ready"), timeout=60)


def stop(hub: HubProcess, name: str) -> None:
    r = hub.api("DELETE", f"/users/{quote(name, safe='')}/server")
    assert r.status_code in (202, 204), r.text + "\n" + "\n".join(hub.lines[-40:])
    hub.wait_for(lambda: server_state(hub, name) is None, timeout=60)


def spawn_post(hub: HubProcess, s: requests.Session, name: str, query: str = "",
               headers: dict[str, str] | None = None) -> requests.Response:
    """Press a Start button: the form POST with the page's XSRF token."""
    url = f"{hub.url}hub/spawn/{quote(name, safe='')}{query}"
    return s.post(url, data={"_xsrf": hub.xsrf_for(s)}, headers=headers,
                  allow_redirects=False, timeout=30)


def assert_page_headers(r: requests.Response) -> None:
    csp = r.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert r.headers["Content-Type"].startswith("text/html")
    assert_no_inline_code(r.text)


def assert_no_inline_code(html: str) -> None:
    """No inline scripts, event handler attributes or style attributes/elements."""
    for tag in re.findall(r"<[a-zA-Z][^>]*>", html):
        bare = re.sub(r'"[^"]*"', '""', tag)  # attribute values are escaped: no raw quotes
        if bare.startswith("<script"):
            assert "src=" in bare, f"inline script: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", bare), f"event handler: {tag}"
        assert not re.search(r"\sstyle\s*=", bare), f"style attribute: {tag}"
    assert "<style" not in html


# --- redirects --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["", "hub/", "hub"])
def test_root_redirects_to_home(phub: HubProcess, path: str) -> None:
    r = requests.get(phub.url + path, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == base_path(phub) + "hub/home"


def test_home_needs_login(phub: HubProcess) -> None:
    r = requests.get(phub.url + "hub/home", allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"].startswith(base_path(phub) + "hub/login?next=")


# --- home --------------------------------------------------------------------------------------
def test_home_stopped_shows_start(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    r = s.get(phub.url + "hub/home", timeout=10)
    assert r.status_code == 200
    assert_page_headers(r)
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert f'<meta name="base-url" content="{base_path(phub)}">' in r.text
    assert f'action="{base_path(phub)}hub/spawn/{name}"' in r.text
    assert re.search(r'<form [^>]*id="start-form"[^>]*>', r.text)
    assert not re.search(r'id="start-form"[^>]*hidden', r.text)
    assert re.search(r'id="running-actions"\s+hidden', r.text)
    assert 'data-state="stopped"' in r.text and "Your server is stopped." in r.text
    assert 'id="admin-badge"' not in r.text
    assert f'src="{base_path(phub)}hub/static/js/home.js"' in r.text


def test_home_admin_badge(phub: HubProcess) -> None:
    _, s = logged_in(phub, "adm", admin=True)
    assert 'id="admin-badge"' in s.get(phub.url + "hub/home", timeout=10).text


def test_static_files_are_served(phub: HubProcess) -> None:
    for path in ("js/jhapi.js", "js/home.js", "js/spawn_pending.js", "css/himalia.css",
                 "bootstrap/css/bootstrap.min.css", "bootstrap/js/bootstrap.bundle.min.js"):
        r = requests.get(f"{phub.url}hub/static/{path}", timeout=10)
        assert r.status_code == 200, path
    r = requests.get(f"{phub.url}hub/static/js/jhapi.js", timeout=10)
    assert "javascript" in r.headers["Content-Type"]


# --- spawn, pending, running, stop ------------------------------------------------------------
def test_spawn_post_then_pending_then_running(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    enc = quote(name, safe="")
    r = spawn_post(phub, s, name)
    assert r.status_code == 303
    pending = f"{base_path(phub)}hub/spawn-pending/{enc}"
    assert r.headers["Location"] == pending
    page = s.get(phub.url + f"hub/spawn-pending/{enc}", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text  # the mock server takes SPAWN_DELAY to start
    assert_page_headers(page)
    assert 'id="progress-bar"' in page.text
    assert f'data-next="{base_path(phub)}user/{enc}/"' in page.text
    home = s.get(phub.url + "hub/home", timeout=10).text
    assert 'data-state="starting"' in home
    assert f'href="{pending}"' in home  # "My Server" goes to the progress page meanwhile

    wait_ready(phub, name)
    done = s.get(phub.url + f"hub/spawn-pending/{enc}", allow_redirects=False, timeout=10)
    assert done.status_code == 302 and done.headers["Location"] == f"{base_path(phub)}user/{enc}/"
    home = s.get(phub.url + "hub/home", timeout=10).text
    assert 'data-state="running"' in home and "Your server is running." in home
    assert f'id="my-server" href="{base_path(phub)}user/{enc}/"' in home
    assert re.search(r'id="start-form"[^>]*hidden', home)
    # The server answers through the proxy (the mock echoes its path).
    assert s.get(phub.url + f"user/{enc}/x", timeout=10).json()["user"] == name
    # Starting again is harmless: off to the pending page, which forwards to the server.
    again = spawn_post(phub, s, name)
    assert again.status_code == 303

    stop(phub, name)
    home = s.get(phub.url + "hub/home", timeout=10).text
    assert 'data-state="stopped"' in home


def test_progress_stream_accepts_xsrf_in_query(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    enc = quote(name, safe="")
    xsrf = phub.xsrf_for(s)
    url = f"{phub.url}hub/api/users/{enc}/server/progress"
    assert s.get(url, timeout=10).status_code == 403  # cookie without XSRF
    assert spawn_post(phub, s, name).status_code == 303
    with s.get(url, params={"_xsrf": xsrf}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines = [raw.decode() for raw in r.iter_lines()]
    events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert events[-1]["ready"] is True
    assert events[-1]["url"] == f"{base_path(phub)}user/{enc}/"
    stop(phub, name)


def test_spawn_post_refuses_forgery(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    url = f"{phub.url}hub/spawn/{quote(name, safe='')}"
    assert s.post(url, data={}, allow_redirects=False, timeout=10).status_code == 403
    cross = spawn_post(phub, s, name, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert server_state(phub, name) is None


def test_spawn_get_changes_nothing(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    r = s.get(f"{phub.url}hub/spawn", allow_redirects=False, timeout=10)
    assert r.status_code == 200
    assert_page_headers(r)
    assert f'action="{base_path(phub)}hub/spawn/{name}"' in r.text
    assert server_state(phub, name) is None


def test_cannot_spawn_or_watch_someone_else(phub: HubProcess) -> None:
    victim, _ = phub.new_user("vic")
    _, s = logged_in(phub)
    enc = quote(victim, safe="")
    assert spawn_post(phub, s, victim).status_code == 404
    for path in (f"hub/spawn/{enc}", f"hub/spawn-pending/{enc}"):
        r = s.get(phub.url + path, allow_redirects=False, timeout=10)
        assert r.status_code == 404
        assert_page_headers(r)
    assert server_state(phub, victim) is None


def test_spawn_next_must_stay_inside_the_server(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    enc = quote(name, safe="")
    inside = f"{base_path(phub)}user/{enc}/lab/tree/a.ipynb"
    r = spawn_post(phub, s, name, query="?" + urlencode({"next": inside}))
    assert r.status_code == 303 and "next=" in r.headers["Location"]
    page = s.get(phub.url + f"hub/spawn-pending/{enc}", params={"next": inside}, timeout=10)
    assert f'data-next="{inside}"' in page.text
    for evil in ("//evil.example/", "https://evil.example/", f"{base_path(phub)}hub/logout"):
        page = s.get(phub.url + f"hub/spawn-pending/{enc}", params={"next": evil}, timeout=10)
        assert f'data-next="{base_path(phub)}user/{enc}/"' in page.text
    stop(phub, name)


# --- /user/<name>/... when the server is not running ------------------------------------------
def test_user_api_request_gets_424_json(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    enc = quote(name, safe="")
    for url, headers in ((f"user/{enc}/api/contents", HTML), (f"user/{enc}/lab", {}),
                         (f"hub/user/{enc}/api/kernels", {})):
        r = s.get(phub.url + url, headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == 424, url
        assert r.headers["Content-Type"].startswith("application/json")
        body = r.json()
        assert body["status"] == 424 and body["message"]
    post = s.post(phub.url + f"user/{enc}/api/contents", json={}, timeout=10)
    assert post.status_code == 424 and post.json()["status"] == 424


def test_user_page_for_owner_is_424_with_start(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    enc = quote(name, safe="")
    r = s.get(phub.url + f"user/{enc}/lab?a=1", headers=HTML, allow_redirects=False,
              timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == f"{base_path(phub)}hub/user/{enc}/lab?a=1"
    # Followed all the way: ends on the 424 page, no redirect loop.
    page = s.get(phub.url + f"user/{enc}/lab", headers=HTML, timeout=10)
    assert page.status_code == 424
    assert_page_headers(page)
    assert 'id="start-form"' in page.text
    nxt = quote(f"{base_path(phub)}user/{enc}/lab", safe="")
    assert f'action="{base_path(phub)}hub/spawn/{enc}?next={nxt}"' in page.text
    assert server_state(phub, name) is None


def test_user_page_for_others_is_404(phub: HubProcess) -> None:
    owner, _ = phub.new_user("own")
    _, s = logged_in(phub)
    page = s.get(phub.url + f"user/{quote(owner, safe='')}/lab", headers=HTML, timeout=10)
    assert page.status_code == 404
    assert_page_headers(page)
    assert 'id="start-form"' not in page.text


def test_user_page_logged_out_goes_to_login(phub: HubProcess) -> None:
    name, _ = phub.new_user("lo")
    enc = quote(name, safe="")
    r = requests.get(phub.url + f"hub/user/{enc}/lab", headers=HTML, allow_redirects=False,
                     timeout=10)
    assert r.status_code == 302 and "/hub/login?next=" in r.headers["Location"]


def test_running_server_without_route_has_no_redirect_loop(phub: HubProcess) -> None:
    name, s = logged_in(phub)
    enc = quote(name, safe="")
    assert spawn_post(phub, s, name).status_code == 303
    wait_ready(phub, name)
    page = s.get(phub.url + f"hub/user/{enc}/lab", headers=HTML, allow_redirects=False,
                 timeout=10)
    assert page.status_code == 503
    assert 'id="retry"' in page.text and 'id="start-form"' not in page.text
    stop(phub, name)


def test_failed_spawn_shows_message(make_hub: Callable[..., HubProcess], tmp_path: Path
                                    ) -> None:
    hub = make_hub(extra_args=[
        "--config", str(mock_config(tmp_path / "crash.toml", mode="crash"))])
    name, s = logged_in(hub)
    enc = quote(name, safe="")
    assert spawn_post(hub, s, name).status_code == 303
    hub.wait_for(lambda: 'data-state="stopped"' in s.get(hub.url + "hub/home", timeout=10).text)
    home = s.get(hub.url + "hub/home", timeout=10).text
    assert 'id="spawn-failure"' in home and "exited" in home
    pending = s.get(hub.url + f"hub/spawn-pending/{enc}", allow_redirects=False, timeout=10)
    assert pending.status_code == 200 and "failed to start" in pending.text
    assert 'id="start-form"' in pending.text


# --- error pages ----------------------------------------------------------------------------
def test_server_that_stops_by_itself_shows_why(phub: HubProcess) -> None:
    """A server whose process ends on its own: the home page says why, until the next start."""
    name, s = logged_in(phub)
    assert spawn_post(phub, s, name).status_code == 303
    wait_ready(phub, name)
    model = phub.api("GET", f"/users/{quote(name, safe='')}").json()
    mockserver.kill_pid(model["servers"][""]["state"]["pid"])
    phub.wait_for(lambda: 'data-state="stopped"' in s.get(phub.url + "hub/home",
                                                           timeout=10).text)
    home = s.get(phub.url + "hub/home", timeout=10).text
    match = re.search(r'id="stop-reason"[^>]*>Why it stopped: ([^<]+)<', home)
    assert match and "the server" in match.group(1), home
    assert 'id="spawn-failure"' not in home  # it did start: a stop, not a failed start
    assert spawn_post(phub, s, name).status_code == 303
    assert 'id="stop-reason"' not in s.get(phub.url + "hub/home", timeout=10).text
    wait_ready(phub, name)
    stop(phub, name)


@pytest.mark.parametrize(("code", "status"), [("404", 404), ("503", 503), ("999", 404)])
def test_proxy_error_target(phub: HubProcess, code: str, status: int) -> None:
    r = requests.get(f"{phub.url}hub/error/{code}", params={"url": "/<script>x</script>"},
                     headers=HTML, timeout=10)
    assert r.status_code == status
    assert_page_headers(r)
    assert f'id="error-code">{status}<' in r.text
    assert "<script>x" not in r.text


@pytest.mark.parametrize("path", ["hub/no/such/page", "no/such/page"])
def test_unknown_paths_get_the_404_page(phub: HubProcess, path: str) -> None:
    r = requests.get(phub.url + path, headers=HTML, timeout=10)
    assert r.status_code == 404
    assert_page_headers(r)
    assert 'id="error-code">404<' in r.text


def test_not_found_under_api_is_json(phub: HubProcess) -> None:
    r = phub.api("GET", "/no/such/thing")
    assert r.status_code == 404
    assert r.json() == {"status": 404, "message": "Not found"}
    cookie = requests.post(phub.url + "hub/api/nothing", json={}, timeout=10)
    assert cookie.status_code == 404 and cookie.json()["status"] == 404


# --- escaping ---------------------------------------------------------------------------------
@pytest.mark.parametrize("evil", XSS_NAMES)
def test_hostile_usernames_are_escaped(phub: HubProcess, evil: str) -> None:
    s = add_named_user(phub, evil)
    enc = quote(evil, safe="")
    pages = [
        s.get(phub.url + "hub/home", timeout=10),
        s.get(phub.url + "hub/spawn", timeout=10),
        s.get(phub.url + f"hub/user/{enc}/lab", headers=HTML, timeout=10),
        s.get(phub.url + f"hub/spawn-pending/{enc}", timeout=10),
    ]
    assert pages[2].status_code == 424
    for page in pages:
        assert evil not in page.text
        assert str(escape(evil)) in page.text
        assert "<img" not in page.text


@pytest.mark.parametrize("evil", XSS_NAMES)
def test_login_escapes_next_and_username(phub: HubProcess, evil: str) -> None:
    s = requests.Session()
    page = s.get(phub.url + "hub/login", params={"next": "/" + evil}, timeout=10)
    assert page.status_code == 200
    assert_page_headers(page)
    assert evil not in page.text and "<img" not in page.text
    failed = s.post(phub.url + "hub/login", data={
        "username": evil, "password": "wrong password!", "_xsrf": s.cookies.get("_xsrf") or ""},
        timeout=10)
    assert failed.status_code == 403
    assert evil not in failed.text and "<img" not in failed.text


# --- static checks of templates and scripts (no hub) -------------------------------------------
@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_templates_have_no_inline_code_or_safe_filter(template: str) -> None:
    text = (TEMPLATES / template).read_text()
    assert_no_inline_code(re.sub(r"{[{%#].*?[}%#]}", "", text, flags=re.S))
    assert "|safe" not in text.replace(" ", "") and "Markup(" not in text
    assert "autoescape false" not in text


@pytest.mark.parametrize("script", sorted(p.name for p in STATIC_JS.glob("*.js")))
def test_scripts_never_write_html(script: str) -> None:
    text = (STATIC_JS / script).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in text, f"{script} uses {sink}"
    assert "jquery" not in text.lower()


def test_jhapi_exports_only_what_pages_import() -> None:
    """No dead exports in the one browser client (a stale helper once encoded ``@`` in
    server URLs differently from the hub)."""
    js = Path(__file__).resolve().parents[2] / "static" / "js"
    exported = set(re.findall(r"^export (?:async )?(?:function|class|const) (\w+)",
                              (js / "jhapi.js").read_text(), re.M))
    imported: set[str] = set()
    for page in js.glob("*.js"):
        for names in re.findall(r'import \{([^}]*)\} from "\./jhapi\.js"', page.read_text()):
            imported.update(n.strip() for n in names.split(",") if n.strip())
    assert exported == imported
