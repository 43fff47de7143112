/* Quorum's review page: take the most urgent escalation, show the evidence, send the expert's
 * decision by key or click, and take the next one, without reloading the page.
 *
 * Plain JavaScript, no build step. Everything goes through the JSON API (/api/v1/…) with the
 * session cookie and the CSRF token. Item payloads are drawn by item.js, exactly as labellers see
 * them; every other text is set with textContent.
 */
(function () {
  "use strict";

  const root = document.getElementById("review");
  const config = JSON.parse(document.getElementById("review-config").textContent);
  const imagePattern = new RegExp(config.image_pattern, "i");
  const $ = (id) => document.getElementById(id);
  const el = {
    stage: $("stage"), evidence: $("evidence"), empty: $("empty"), notice: $("notice"),
    done: $("done-count"), answers: $("answers"), remove: $("remove"), sendBack: $("send-back"),
    goldMode: $("gold-mode"), mode: $("mode"), note: $("note"), reason: $("reason"),
    why: $("why"), model: $("model"), posterior: $("posterior"), gold: $("gold"),
    crowd: $("crowd"), notes: $("notes"), checkAgain: $("check-again"),
    instructions: $("instructions"),
  };
  const labelButtons = Array.from(el.answers.querySelectorAll(".label-btn"));
  const state = { escalation: null, busy: false, gold: false, done: 0 };

  const api = window.QuorumApi.client(root);

  function detail(result, fallback) {
    const data = result.data || {};
    if (data.errors && data.errors.length) return data.errors.map((e) => e.reason).join("; ");
    if (data.detail) return data.detail;
    const fields = Object.values(data).flat().filter((v) => typeof v === "string");
    return fields.length ? fields.join("; ") : fallback;
  }

  function notify(text, kind) {
    el.notice.textContent = text;
    el.notice.className = "notice " + (kind || "info");
    el.notice.hidden = false;
  }

  function clearNotice() {
    el.notice.hidden = true;
    el.notice.textContent = "";
  }

  function setMode(text) {
    el.mode.textContent = text || "";
    el.mode.hidden = !text;
  }

  function node(tag, text, className) {
    const n = document.createElement(tag);
    if (text !== undefined) n.textContent = text;
    if (className) n.className = className;
    return n;
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : (100 * value).toFixed(0) + " %";
  }

  // ---- drawing an escalation ----

  function drawModel(prediction) {
    el.model.textContent = prediction
      ? prediction.label + " at " + pct(prediction.confidence) + " (" + prediction.model_version + ")"
      : "No prediction for this item.";
  }

  function drawPosterior(consensus) {
    el.posterior.replaceChildren();
    if (!consensus || !consensus.posterior) {
      el.posterior.append(node("p", "No consensus yet."));
      el.posterior.setAttribute("aria-label", "No consensus yet");
      return;
    }
    const parts = [];
    for (const label of config.labels) {
      const p = consensus.posterior[label] || 0;
      const bar = node("div", undefined, "bar");
      const track = node("div", undefined, "track");
      const fill = node("div", undefined, "fill");
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.append(fill);
      bar.append(node("span", label), track, node("span", pct(p)));
      bar.dataset.label = label;
      el.posterior.append(bar);
      parts.push(label + " " + pct(p));
    }
    el.posterior.setAttribute("aria-label", "Posterior: " + parts.join(", "));
    const agreement = consensus.agreement === null ? "" : ", agreement " + pct(consensus.agreement);
    el.posterior.append(node("p", consensus.n_labels + " labels" + agreement + " (" + consensus.method + ")"));
  }

  function drawCrowd(labels) {
    el.crowd.replaceChildren();
    for (const one of labels) {
      const r = one.reliability;
      const row = document.createElement("tr");
      row.append(node("td", one.labeller), node("td", one.label), node("td", pct(r.accuracy)),
        node("td", pct(r.gold_accuracy)), node("td", (r.flags || []).join(", ")));
      el.crowd.append(row);
    }
    if (!labels.length) {
      const row = document.createElement("tr");
      const cell = node("td", "No valid crowd labels.");
      cell.colSpan = 5;
      row.append(cell);
      el.crowd.append(row);
    }
  }

  function drawNotes(notes) {
    el.notes.replaceChildren();
    for (const n of notes) {
      const what = n.resolution + (n.label ? " " + n.label : "");
      el.notes.append(node("li", n.at.slice(0, 10) + " · " + n.by + " · " + what + (n.note ? ": " + n.note : "")));
    }
    if (!notes.length) el.notes.append(node("li", "None."));
  }

  function show(escalation) {
    state.escalation = escalation;
    state.gold = false;
    setMode("");
    el.empty.hidden = true;
    el.stage.hidden = false;
    el.evidence.hidden = false;
    const id = node("p", "item " + escalation.item.external_id, "label-id");
    const payload = QuorumItem.render(escalation.item.payload, imagePattern, "This item has nothing to show.");
    el.stage.replaceChildren(payload, id);
    el.stage.dataset.escalation = String(escalation.id);
    el.stage.setAttribute("aria-busy", "false");
    el.why.textContent = "Escalated: " + escalation.reason.replace("_", " ") +
      " · priority " + escalation.priority.toFixed(3);
    drawModel(escalation.prediction);
    drawPosterior(escalation.consensus);
    el.gold.hidden = !escalation.item.gold_label;
    el.gold.textContent = "Gold answer: " + escalation.item.gold_label;
    drawCrowd(escalation.labels);
    drawNotes(escalation.notes);
    el.note.value = "";
    setControls(true);
    state.busy = false;
    el.stage.focus({ preventScroll: true });
  }

  function setControls(enabled) {
    for (const b of labelButtons) b.disabled = !enabled;
    el.remove.disabled = el.sendBack.disabled = el.goldMode.disabled = !enabled;
  }

  function showEmpty() {
    state.escalation = null;
    setControls(false);
    el.stage.hidden = true;
    el.evidence.hidden = true;
    delete el.stage.dataset.escalation;
    el.empty.hidden = false;
    state.busy = false;
    el.checkAgain.focus();
  }

  function refused(result) {
    state.busy = false;
    if (result.status === 401 || result.status === 403) {
      notify("You are not logged in as an expert of this project: nothing was sent.", "error");
      return true;
    }
    return false;
  }

  // ---- the work: next and resolve ----

  async function loadNext() {
    state.busy = true;
    state.escalation = null;
    el.stage.setAttribute("aria-busy", "true");
    const reason = el.reason.value;
    const url = config.next_url + (reason ? "?reason=" + encodeURIComponent(reason) : "");
    const result = await api("GET", url);
    if (result.status === 200) return show(result.data);
    if (result.status === 204) return showEmpty();
    if (refused(result)) return;
    notify(detail(result, "The next escalation could not be loaded (error " + result.status + ")."), "error");
  }

  async function resolve(body, what) {
    const escalation = state.escalation;
    if (!escalation || state.busy) return;
    state.busy = true;
    const note = el.note.value.trim();
    if (note) body.note = note;
    const result = await api("POST", config.resolve_url + escalation.id + "/resolve", body);
    if (result.status === 200) {
      state.done += 1;
      el.done.textContent = String(state.done);
      el.note.value = "";
      notify("Item " + escalation.item.external_id + ": " + what + ".", "info");
      return loadNext();
    }
    if (refused(result)) return;
    if (result.status === 409 || result.status === 404) {
      notify(detail(result, "This escalation is no longer yours") + ". Here is the next one.", "warn");
      return loadNext();
    }
    state.busy = false;
    if (result.status === 0) return notify("Quorum could not be reached: nothing was sent. Try again.", "error");
    notify(detail(result, "The decision was not accepted (error " + result.status + ")."), "error");
  }

  function choose(label) {
    if (state.gold) {
      state.gold = false;
      setMode("");
      return resolve({ action: "gold", label: label }, "gold answer " + label);
    }
    return resolve({ label: label }, "final label " + label);
  }

  function remove() {
    return resolve({ action: "remove" }, "removed from the data set");
  }

  function sendBack() {
    if (!state.escalation || state.busy) return;
    if (!el.note.value.trim()) {
      notify("Sending back needs a note for the crowd's instructions: write it, then press Esc and b.", "warn");
      el.note.focus();
      return;
    }
    return resolve({ action: "send_back" }, "sent back to the crowd");
  }

  function goldMode() {
    if (!state.escalation || state.busy) return;
    state.gold = true;
    setMode("Mark as gold: press the key of the gold answer (Esc cancels).");
  }

  // ---- keys and clicks ----

  function buttonForKey(key) {
    const exact = labelButtons.find((b) => b.dataset.key === key);
    if (exact || key.length !== 1) return exact;
    return labelButtons.find((b) => (b.dataset.key || "").toLowerCase() === key.toLowerCase());
  }

  const actions = { r: remove, b: sendBack, g: goldMode };

  function onKey(event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) {
      if (event.key === "Escape") {
        target.blur();
        el.stage.focus({ preventScroll: true });
      }
      return;
    }
    const key = event.key;
    if (key === "Escape") {
      state.gold = false;
      return setMode("");
    }
    if (key === "?") {
      event.preventDefault();
      if (el.instructions) el.instructions.open = !el.instructions.open;
      return;
    }
    if (event.repeat) return;
    if (key === "n" || key === "N") {
      event.preventDefault();
      return el.note.focus();
    }
    const button = buttonForKey(key);
    if (button) {
      event.preventDefault();
      return choose(button.dataset.label);
    }
    const action = actions[key.toLowerCase()];
    if (action) {
      event.preventDefault();
      return action();
    }
  }

  document.addEventListener("keydown", onKey);
  for (const b of labelButtons) b.addEventListener("click", () => choose(b.dataset.label));
  el.remove.addEventListener("click", remove);
  el.sendBack.addEventListener("click", sendBack);
  el.goldMode.addEventListener("click", goldMode);
  el.checkAgain.addEventListener("click", () => loadNext());
  el.reason.addEventListener("change", () => loadNext());
  document.getElementById("filter").addEventListener("submit", (e) => { e.preventDefault(); loadNext(); });
  loadNext();
})();
