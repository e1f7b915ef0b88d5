// Feedback on the page: the error line (with the token card when the server wants one), notices,
// the progress bar, and the run buttons disabled while a run is in flight.

const $ = (id) => document.getElementById(id);

/** Show an error's message (as text) and code; a 429's Retry-After says when to try again. */
export function showError(err) {
  if (err?.code === "unauthorized") $("token-card").hidden = false;
  const retry = err?.retryAfter ? ` Try again in ${err.retryAfter} s.` : "";
  $("error-message").textContent = (err?.message || String(err)) + retry;
  $("error").dataset.code = err?.code || "error";
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error-message").textContent = "";
}

/** A note that is no error (say, a result recomputed); null hides it. */
export function showNotice(message) {
  $("notice-message").textContent = message ?? "";
  $("notice").hidden = !message;
}

/** The progress bar from a job's progress ({stage, percent, queue_position}); null hides it. */
export function showProgress(progress) {
  $("progress-box").hidden = !progress;
  if (!progress) return;
  const bar = $("progress");
  const percent = Number(progress.percent);
  if (Number.isFinite(percent) && percent > 0) {
    bar.max = 100;
    bar.value = Math.min(100, percent); // the API reports 0..100
  } else {
    bar.removeAttribute("value"); // indeterminate
  }
  const queued = progress.queue_position ? ` (${progress.queue_position} ahead in the queue)` : "";
  $("progress-label").textContent = `${progress.stage || "working"}…${queued}`;
}

export function setRunning(running) {
  for (const button of document.querySelectorAll("[data-run]")) button.disabled = running;
}
