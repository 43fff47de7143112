/* Quorum's labelling page: fetch an item, take an answer by key or click, send it, repeat.
 *
 * Plain JavaScript, no build step, no outside code. Everything goes through the JSON API
 * (/api/v1/…) with the session cookie and the CSRF token; the page never reloads. Payload text is
 * only ever set with textContent, and images only from data:/http(s) image URLs, so nothing in an
 * item can become markup.
 */
(function () {
  "use strict";

  const root = document.getElementById("labelling");
  const config = JSON.parse(document.getElementById("label-config").textContent);
  const imagePattern = new RegExp(config.image_pattern, "i");
  const el = {
    stage: document.getElementById("stage"),
    empty: document.getElementById("empty"),
    notice: document.getElementById("notice"),
    done: document.getElementById("done-count"),
    answers: document.getElementById("answers"),
    skip: document.getElementById("skip"),
    undo: document.getElementById("undo"),
    checkAgain: document.getElementById("check-again"),
    instructions: document.getElementById("instructions"),
  };
  const labelButtons = Array.from(el.answers.querySelectorAll(".label-btn"));
  const state = {
    task: null, // the item on screen: {lease, item, labels, expires_at}
    shownAt: 0, // performance.now() when it appeared: the answer's duration starts here
    previous: null, // the last answered task, which `u` can take back
    busy: false, // a request is under way: keys and clicks wait for it
    heartbeat: null,
    done: Number(load("done") || 0),
  };

  // Storage can be switched off (private modes, strict settings): the page works without it.
  function load(name) {
    try {
      return window.sessionStorage.getItem(config.storage_key + ":" + name);
    } catch (e) {
      return null;
    }
  }
  function save(name, value, storage) {
    try {
      (storage || window.sessionStorage).setItem(config.storage_key + ":" + name, String(value));
    } catch (e) {
      /* not remembered: harmless */
    }
  }

  // ---- talking to the API ----

  const api = window.QuorumApi.client(root);

  function leaseUrl(lease, action) {
    return config.lease_url + encodeURIComponent(lease) + "/" + action;
  }

  // ---- messages ----

  function notify(text, kind, action) {
    el.notice.replaceChildren();
    const message = document.createElement("span");
    message.textContent = text;
    el.notice.append(message);
    if (action) el.notice.append(" ", action);
    el.notice.className = "notice " + (kind || "info");
    el.notice.hidden = false;
  }

  function clearNotice() {
    el.notice.hidden = true;
    el.notice.replaceChildren();
  }

  function retryButton(label, run) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = label;
    button.addEventListener("click", run);
    return button;
  }

  function loggedOut() {
    stopHeartbeat();
    const link = document.createElement("a");
    link.href = config.login_url + "?next=" + encodeURIComponent(window.location.pathname);
    link.textContent = "Log in again";
    notify("You are no longer logged in, so nothing was sent.", "error", link);
    state.busy = false;
  }

  function detail(result, fallback) {
    return (result.data && result.data.detail) || fallback;
  }

  // ---- drawing an item: static/js/item.js, shared with the review page ----

  function renderPayload(payload) {
    return QuorumItem.render(payload, imagePattern, "This item has nothing to show. Skip it with s.");
  }

  function show(task) {
    state.task = task;
    el.empty.hidden = true;
    el.stage.hidden = false;
    const id = document.createElement("p");
    id.className = "label-id";
    id.textContent = "item " + task.item.external_id;
    el.stage.replaceChildren(renderPayload(task.item.payload), id);
    el.stage.dataset.lease = String(task.lease);
    el.stage.setAttribute("aria-busy", "false");
    setControls(true);
    state.shownAt = performance.now();
    startHeartbeat();
    state.busy = false;
    el.stage.focus({ preventScroll: true });
  }

  function setControls(enabled) {
    for (const button of labelButtons) button.disabled = !enabled;
    el.skip.disabled = !enabled;
    el.undo.disabled = !state.previous;
  }

  function showEmpty() {
    state.task = null;
    stopHeartbeat();
    setControls(false);
    el.stage.hidden = true;
    delete el.stage.dataset.lease;
    el.empty.hidden = false;
    state.busy = false;
    el.checkAgain.focus();
  }

  function showProblem(text) {
    state.task = null;
    stopHeartbeat();
    setControls(false);
    el.stage.replaceChildren();
    el.stage.hidden = true;
    delete el.stage.dataset.lease;
    state.busy = false;
    const retry = retryButton("Try again", () => loadNext());
    notify(text, "error", retry);
    retry.focus();
  }

  function countDone(change) {
    state.done = Math.max(0, state.done + change);
    el.done.textContent = String(state.done);
    save("done", state.done);
  }

  // ---- the work: next, answer, skip, undo, heartbeat ----

  async function loadNext() {
    state.busy = true;
    state.task = null;
    stopHeartbeat();
    el.stage.setAttribute("aria-busy", "true");
    const result = await api("GET", config.next_url);
    if (result.status === 200) return show(result.data);
    if (result.status === 204) return showEmpty();
    if (result.status === 401 || result.status === 403) return loggedOut();
    if (result.status === 0) return showProblem("Quorum could not be reached: check your connection.");
    showProblem(detail(result, "The next item could not be loaded (error " + result.status + ")."));
  }

  function answer(label) {
    if (!state.task || state.busy) return;
    state.busy = true;
    const duration = Math.round(performance.now() - state.shownAt);
    submit(state.task, label, duration);
  }

  async function submit(task, label, duration) {
    // `next: true`: the answer's response brings the next item too, one round trip an item.
    const result = await api("POST", leaseUrl(task.lease, "label"), {
      label: label,
      duration_ms: duration,
      next: true,
    });
    if (result.status === 201) {
      clearNotice();
      countDone(1);
      state.previous = task;
      const data = result.data || {};
      if (data.next) return show(data.next);
      if (data.next === null && !data.next_error) return showEmpty();
      return loadNext(); // no next item could be leased: tasks/next says why
    }
    if (result.status === 429) return slowDown(result, () => submit(task, label, duration));
    if (result.status === 409 || result.status === 404) return lost(result, "Your answer was not saved: the item");
    if (result.status === 401 || result.status === 403) return loggedOut();
    state.busy = false;
    if (result.status === 0) {
      notify("Your answer was not sent: Quorum could not be reached. Press the key again.", "error");
    } else {
      notify(detail(result, "Your answer was not accepted (error " + result.status + ")."), "error");
    }
  }

  // The lease is gone (expired, or closed elsewhere): say so, and move on to a new item.
  function lost(result, what) {
    const why = detail(result, "");
    if (result.status === 409 && /expired/i.test(why)) {
      notify(what + " expired (items are held for you for a limited time). Here is a new one.", "warn");
    } else {
      notify(what + " is no longer yours" + (why ? " (" + why + ")" : "") + ". Here is a new one.", "warn");
    }
    return loadNext();
  }

  function slowDown(result, again) {
    const wait = Math.max(1, Number(result.headers.get("Retry-After")) || 5);
    notify("Slow down: answers are arriving too fast. Sending again in " + wait + " s…", "warn");
    window.setTimeout(again, wait * 1000);
  }

  async function skip() {
    if (!state.task || state.busy) return;
    state.busy = true;
    const result = await api("POST", leaseUrl(state.task.lease, "skip"));
    if (result.status === 200) {
      clearNotice();
      return loadNext();
    }
    if (result.status === 409 || result.status === 404) return lost(result, "The item you skipped");
    if (result.status === 401 || result.status === 403) return loggedOut();
    state.busy = false;
    notify(detail(result, "The item could not be skipped; try again."), "error");
  }

  async function undo() {
    if (state.busy) return;
    if (!state.previous) {
      notify("There is no answer to undo.", "info");
      return;
    }
    state.busy = true;
    const previous = state.previous;
    const result = await api("POST", leaseUrl(previous.lease, "undo"));
    state.previous = null;
    if (result.status === 200) {
      countDone(-1);
      notify("Your last answer was taken back: answer this item again.", "info");
      show(result.data);
      beat(); // the reopened lease keeps its old expiry: renew it now
      return;
    }
    if (result.status === 401 || result.status === 403) return loggedOut();
    state.busy = false;
    el.undo.disabled = true;
    notify(detail(result, "That answer can no longer be undone."), "warn");
  }

  async function beat() {
    const task = state.task;
    if (!task) return;
    const result = await api("POST", leaseUrl(task.lease, "heartbeat"));
    if (state.task !== task) return; // the page moved on meanwhile
    if (result.status === 200) {
      task.expires_at = result.data.expires_at;
    } else if ((result.status === 409 || result.status === 404) && !state.busy) {
      lost(result, "While the page was idle, the item");
    }
  }

  function startHeartbeat() {
    stopHeartbeat();
    state.heartbeat = window.setInterval(beat, config.heartbeat_ms);
  }

  function stopHeartbeat() {
    if (state.heartbeat !== null) window.clearInterval(state.heartbeat);
    state.heartbeat = null;
  }

  // ---- instructions: open on a first visit, then as the labeller last left them ----

  function setUpInstructions() {
    if (!el.instructions) return;
    let seen = null;
    try {
      seen = window.localStorage.getItem(config.storage_key + ":instructions");
    } catch (e) {
      seen = null;
    }
    if (seen === "closed" || seen === "seen") el.instructions.open = false;
    if (seen === null) save("instructions", "seen", window.localStorage);
    el.instructions.addEventListener("toggle", () => {
      save("instructions", el.instructions.open ? "open" : "closed", window.localStorage);
    });
  }

  function toggleInstructions() {
    if (el.instructions) el.instructions.open = !el.instructions.open;
  }

  // ---- keys and clicks ----

  function buttonForKey(key) {
    const exact = labelButtons.find((b) => b.dataset.key === key);
    if (exact || key.length !== 1) return exact;
    return labelButtons.find((b) => (b.dataset.key || "").toLowerCase() === key.toLowerCase());
  }

  function onKey(event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.isComposing) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    const key = event.key;
    if (key === "?") {
      event.preventDefault();
      return toggleInstructions();
    }
    // A held key must not answer item after item.
    if (event.repeat) return;
    const button = buttonForKey(key);
    if (button) {
      event.preventDefault();
      return answer(button.dataset.label);
    }
    if (key === "s" || key === "S") {
      event.preventDefault();
      return skip();
    }
    if (key === "u" || key === "U" || key === "Backspace") {
      event.preventDefault();
      return undo();
    }
  }

  document.addEventListener("keydown", onKey);
  for (const button of labelButtons) {
    button.addEventListener("click", () => answer(button.dataset.label));
  }
  el.skip.addEventListener("click", skip);
  el.undo.addEventListener("click", undo);
  el.checkAgain.addEventListener("click", () => loadNext());

  el.done.textContent = String(state.done);
  setUpInstructions();
  loadNext();
})();
