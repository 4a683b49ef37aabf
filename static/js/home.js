// home.js: the Home page.  Start is a plain form POST (works without scripts; this only shows
// that it is busy); Stop calls the API through jhapi.js and updates the page in place.
import { APIError, getUser, stopServer } from "./jhapi.js";

const STATUS_TEXT = {
  stopped: "Your server is stopped.",
  starting: "Your server is starting.",
  stopping: "Your server is stopping.",
  running: "Your server is running.",
};
const POLL_MS = 1000;
const STOP_TIMEOUT_MS = 120000;

const card = document.getElementById("server-card");
const el = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Show `state` ("stopped", "starting", "stopping", "running") on the page. */
function show(state) {
  card.dataset.state = state;
  el("server-status").textContent = STATUS_TEXT[state] ?? state;
  el("running-actions").hidden = state === "stopped";
  el("start-form").hidden = state !== "stopped";
  el("stop").disabled = state === "stopping";
  if (state === "stopped") {
    el("start").disabled = false;
    el("start").textContent = "Start My Server";
  }
}

function showError(message) {
  const box = el("home-error");
  box.textContent = message;
  box.hidden = !message;
}

/** Poll the user model until the server is gone from it (stopped). */
async function waitStopped(user, server) {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const model = await getUser(user);
    const current = model.servers?.[server];
    if (!current || (current.stopped && !current.pending)) {
      return;
    }
    await sleep(POLL_MS);
  }
  throw new Error("The server is taking too long to stop; reload the page to check again.");
}

async function stop() {
  const { user, server } = card.dataset;
  const before = card.dataset.state;
  showError("");
  show("stopping");
  try {
    const { status } = await stopServer(user, server);
    if (status === 202) {
      await waitStopped(user, server);
    }
    show("stopped");
  } catch (error) {
    showError(error instanceof APIError ? `Could not stop the server: ${error.message}`
      : error.message);
    show(before);
  }
}

function init() {
  if (!card) {
    return;
  }
  el("stop").addEventListener("click", stop);
  el("start-form").addEventListener("submit", () => {
    el("start").disabled = true;
    el("start").textContent = "Starting…";
  });
  if (card.dataset.state === "stopping") {
    const { user, server } = card.dataset;
    waitStopped(user, server).then(() => show("stopped"), (error) => showError(error.message));
  }
}

init();
