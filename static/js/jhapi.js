// jhapi.js: the one browser client for Himalia's REST API.
//
// It reads the hub's URLs and the XSRF token from the <meta> tags page.html writes, so no page
// builds a URL of its own: the base URL arrives already URL-encoded from the server, and every
// name put into a path goes through encodeURIComponent.  Calls use the login cookie (same
// origin) and always carry the X-XSRFToken header, which the hub requires on every method.
//
//   import { getUser, stopServer, progressUrl } from "./jhapi.js";
//   await getUser("alice");                  // user model
//   await stopServer("alice");               // {status: 204|202, data}
//   new EventSource(progressUrl("alice"));
// Failed calls reject with APIError(status, message) carrying the hub's {status, message}.
// Only what a page imports is exported (tests/hub/test_pages.py checks): servers start
// through the spawn page's form, and server URLs come from the hub, which encodes them.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";

/** The hub's public base URL, e.g. "/" or "/my%20hub@x/" (encoded, ends with "/"). */
const baseUrl = meta("base-url") || "/";
/** "<baseUrl>hub/": where the pages and the API live. */
const prefix = meta("hub-prefix") || `${baseUrl}hub/`;
const xsrfToken = meta("xsrf-token");

const enc = encodeURIComponent;

/** An API call that failed: `status` is the HTTP status, `message` the hub's explanation. */
export class APIError extends Error {
  constructor(status, message) {
    super(message || `Request failed with status ${status}`);
    this.name = "APIError";
    this.status = status;
  }
}

/** Full URL of an API path such as "users/alice" (no leading slash). */
function apiUrl(path) {
  return `${prefix}api/${path}`;
}

function serverPath(user, server = "") {
  return `users/${enc(user)}/${server ? `servers/${enc(server)}` : "server"}`;
}

/**
 * Call the API.  Resolves to {status, data} (data: parsed JSON body, or null when empty);
 * rejects with APIError on any non-2xx answer.
 */
async function request(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", "X-XSRFToken": xsrfToken };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(apiUrl(path), init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new APIError(response.status, data?.message ?? response.statusText);
  }
  return { status: response.status, data };
}

/** The user model of `user` (JupyterHub's shape: servers, pending, admin...). */
export async function getUser(user) {
  return (await request(`users/${enc(user)}`)).data;
}

/** Stop a server: {status: 204} once stopped, {status: 202} while still stopping. */
export function stopServer(user, server = "") {
  return request(serverPath(user, server), { method: "DELETE" });
}

/**
 * URL of a server's progress event stream.  EventSource cannot send headers, so the XSRF
 * token travels as the `_xsrf` query parameter.
 */
export function progressUrl(user, server = "") {
  return `${apiUrl(serverPath(user, server))}/progress?_xsrf=${enc(xsrfToken)}`;
}

/** Whether `url` is a path on this site (one leading "/", no backslash): safe to navigate to. */
export function isLocalPath(url) {
  return typeof url === "string" && url.startsWith("/") && !url.startsWith("//")
    && !url.includes("\\");
}
