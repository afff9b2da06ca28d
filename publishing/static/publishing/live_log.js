// The publishing detail page: while the publishing is active, poll its
// staff-only JSON view and update the log, the status and the progress;
// reload once when it finishes, so attempts and the artifact show.
(function () {
  "use strict";
  const INTERVAL_MS = 2000;

  function start() {
    const log = document.getElementById("publishing-log");
    if (!log) {
      return;
    }
    const state = document.getElementById("publishing-log-state");
    log.scrollTop = log.scrollHeight;
    if (log.dataset.terminal === "true") {
      return;
    }
    const url = log.dataset.liveUrl;
    let failures = 0;

    function following() {
      // The reader scrolled up to read: leave them there.
      return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    }

    function show(data) {
      const follow = following();
      if (log.textContent !== data.log) {
        log.textContent = data.log;
        if (follow) {
          log.scrollTop = log.scrollHeight;
        }
      }
      document.querySelectorAll("[data-publishing-status]").forEach(function (badge) {
        badge.className = "pub-badge pub-" + data.status;
        badge.textContent = data.status;
      });
      document.querySelectorAll("[data-publishing-progress]").forEach(function (bar) {
        const value = bar.querySelector("progress");
        const label = bar.querySelector("span");
        if (value) {
          value.value = data.progress;
        }
        if (label) {
          label.textContent = data.progress + "%";
        }
      });
      if (state) {
        state.textContent = "Live: refreshed at " + new Date().toLocaleTimeString() + ".";
      }
    }

    async function poll() {
      try {
        const response = await fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        const data = await response.json();
        failures = 0;
        show(data);
        if (data.terminal) {
          window.location.reload();
          return;
        }
      } catch (error) {
        failures += 1;
        if (state) {
          state.textContent = "Live refresh paused (" + error.message + "); retrying.";
        }
      }
      // Back off while the server does not answer (logged out, restarting).
      window.setTimeout(poll, INTERVAL_MS * Math.min(1 + failures, 15));
    }

    window.setTimeout(poll, INTERVAL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
