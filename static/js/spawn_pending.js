// spawn_pending.js: follow a server's start through its progress event stream (SSE) and
// forward to it on the final "ready" event, or show the failure message.
import { isLocalPath, progressUrl, stopServer } from "./jhapi.js";

// EventSource reconnects on its own; give up after this many errors in a row.
const MAX_ERRORS = 5;

const root = document.getElementById("spawn-progress");
const el = (id) => document.getElementById(id);

function setProgress(percent) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  el("progress-bar").style.width = `${value}%`;
  el("progress").setAttribute("aria-valuenow", String(value));
}

function logLine(text) {
  const item = document.createElement("li");
  item.textContent = text;
  el("progress-log").append(item);
}

function fail(message) {
  el("cancel-start").hidden = true;
  el("progress-bar").classList.remove("progress-bar-animated");
  el("progress-bar").classList.add("bg-danger");
  el("progress-message").textContent = "The server did not start.";
  el("failure-message").textContent = message || "The server failed to start.";
  el("progress-failed").hidden = false;
}

/** Where to go once ready: the page's next URL, else the event's URL, else the server's. */
function destination(eventUrl) {
  const { next, serverUrl } = root.dataset;
  for (const url of [next, eventUrl, serverUrl]) {
    if (isLocalPath(url)) {
      return url;
    }
  }
  return serverUrl;
}

function onEvent(source, event) {
  if (event.progress !== undefined) {
    setProgress(event.progress);
  }
  if (event.message) {
    el("progress-message").textContent = event.message;
    logLine(event.message);
  }
  if (event.ready) {
    source.close();
    setProgress(100);
    el("progress-message").textContent = "Server ready; opening it…";
    window.location.assign(destination(event.url));
  } else if (event.failed) {
    source.close();
    fail(event.message);
  }
}

function follow() {
  const { user, server } = root.dataset;
  const source = new EventSource(progressUrl(user, server));
  let errors = 0;
  source.addEventListener("message", (message) => {
    errors = 0;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return; // not ours: ignore
    }
    onEvent(source, event);
  });
  source.addEventListener("error", () => {
    errors += 1;
    if (source.readyState === EventSource.CLOSED || errors >= MAX_ERRORS) {
      source.close();
      fail("Lost contact with the hub while the server was starting. Reload to check again.");
    }
  });
}

/** Cancel: stop the pending start (a queued batch job is cancelled), then go home. */
async function cancel() {
  el("cancel-start").disabled = true;
  el("progress-message").textContent = "Cancelling…";
  try {
    await stopServer(root.dataset.user, root.dataset.server);
  } catch (error) {
    el("cancel-start").disabled = false;
    el("progress-message").textContent = `Could not cancel: ${error.message}`;
    return;
  }
  window.location.assign(el("home-link").getAttribute("href"));
}

if (root) {
  el("cancel-start").addEventListener("click", cancel);
  follow();
}
