/* Outside workers' task pages: keys answer, the time spent is sent along, and a saved Mechanical
 * Turk answer goes on to Amazon by itself. Plain JavaScript, no build step; the pages work
 * without it (buttons submit the form; the "Send" button posts to Amazon). */
(function () {
  "use strict";

  const shownAt = performance.now();
  const form = document.getElementById("task-form");
  const amazon = document.querySelector("form[data-autosubmit]");

  if (amazon) {
    amazon.submit();
    return;
  }
  if (!form) return;
  const buttons = Array.from(form.querySelectorAll(".label-btn"));
  let sent = false;

  form.addEventListener("submit", (event) => {
    if (sent) {
      event.preventDefault();
      return;
    }
    sent = true;
    form.elements.duration_ms.value = String(Math.round(performance.now() - shownAt));
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || event.isComposing) return;
    const key = event.key;
    const button =
      buttons.find((b) => b.dataset.key === key) ||
      buttons.find((b) => key.length === 1 && (b.dataset.key || "").toLowerCase() === key.toLowerCase());
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  });
})();
