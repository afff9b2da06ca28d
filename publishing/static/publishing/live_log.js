// The publishing detail page: while the publishing is active, re-read the page every two seconds and
// swap what changed in place: the title, breadcrumbs and heading, the buttons, every fieldset (status, attempts, timing,
// worker, error, artifact), the inlines (attempts, deliveries) and the log's text. The log keeps its
// scroll position: a reader scrolled up to read stays there; one at the bottom follows new lines.
// Once the publishing is terminal the page is final and polling stops (no reload).
(function () {
  "use strict";
  const INTERVAL_MS = 2000;
  // The parts of the change page that change as a publishing runs, in page order.
  const PARTS =
    ".breadcrumbs, #content > h2, #content .object-tools, #publishing_form fieldset.aligned, " +
    "#publishing_form .inline-group";

  function start() {
    const log = document.getElementById("publishing-log");
    if (!log || !window.publisherLive) {
      return;
    }
    const live = window.publisherLive;
    const state = document.getElementById("publishing-log-state");
    log.scrollTop = log.scrollHeight;
    if (log.dataset.terminal === "true") {
      return;
    }
    let failures = 0;

    function following() {
      return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    }

    function show(page) {
      const fresh = page.getElementById("publishing-log");
      if (!fresh) {
        throw new Error("no log on the page");
      }
      const olds = Array.from(document.querySelectorAll(PARTS));
      const news = Array.from(page.querySelectorAll(PARTS));
      // The same parts in the same order: swap each but the log's own fieldset, whose <pre> keeps its
      // scroll position and only takes the new text.
      if (olds.length === news.length) {
        olds.forEach(function (old, i) {
          if (!old.contains(log) && old.innerHTML !== news[i].innerHTML) {
            live.swap(old, news[i]);
          }
        });
      }
      const follow = following();
      if (log.textContent !== fresh.textContent) {
        log.textContent = fresh.textContent;
        if (follow) {
          log.scrollTop = log.scrollHeight;
        }
      }
      document.title = page.title;
      log.dataset.terminal = fresh.dataset.terminal;
      return fresh.dataset.terminal === "true";
    }

    async function poll() {
      let done = false;
      try {
        done = show(await live.read());
        failures = 0;
        if (state) {
          state.textContent = done ? "Final." : "Live: refreshed at " + live.clock() + ".";
        }
      } catch (error) {
        failures += 1;
        if (state) {
          state.textContent = "Live refresh paused (" + error.message + "); retrying.";
        }
      }
      if (!done) {
        // Back off while the server does not answer (signed out, restarting).
        window.setTimeout(poll, INTERVAL_MS * Math.min(1 + failures, 15));
      }
    }

    window.setTimeout(poll, INTERVAL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
