// Live admin pages: re-read the page itself and swap its changing parts in place, no reload.
//
// `publisherLive.read()` fetches this page's own URL and parses it; `publisherLive.swap()` replaces an
// element by its counterpart. The changelist and the queue overview carry a toggle (#live-toggle, see
// admin/publishing/live_toggle.html): ticked, remembered in localStorage under its data-live-key, it
// swaps the elements whose ids data-live-regions lists every few seconds, and pauses while anything
// matching data-live-pause (a ticked row) is on the page, so a selection is never lost.
(function () {
  "use strict";
  const INTERVAL_MS = 5000;

  async function read() {
    const response = await fetch(window.location.href, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    });
    if (!response.ok) {
      throw new Error("HTTP " + response.status);
    }
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    if (!page.getElementById("content")) {
      throw new Error("signed out?");
    }
    return page;
  }

  // Replace `old` by `fresh` (from another document), keeping which of its <details> are open.
  function swap(old, fresh) {
    const opened = Array.from(old.querySelectorAll("details")).map(function (d) {
      return d.open;
    });
    const copy = document.importNode(fresh, true);
    copy.querySelectorAll("details").forEach(function (d, i) {
      if (opened[i]) {
        d.open = true;
      }
    });
    old.replaceWith(copy);
    return copy;
  }

  function clock() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  window.publisherLive = { read: read, swap: swap, clock: clock };

  function start() {
    const toggle = document.getElementById("live-toggle");
    if (!toggle) {
      return;
    }
    const state = document.getElementById("live-state");
    const key = toggle.dataset.liveKey;
    const regions = toggle.dataset.liveRegions.split(",");
    const pause = toggle.dataset.livePause;
    const seen = {};
    let timer = null;
    let failures = 0;

    function say(text) {
      state.textContent = text;
    }

    function refresh(page) {
      let swapped = false;
      regions.forEach(function (id) {
        const old = document.getElementById(id);
        const fresh = page.getElementById(id);
        if (old && fresh && seen[id] !== fresh.innerHTML) {
          seen[id] = fresh.innerHTML;
          swap(old, fresh);
          swapped = true;
        }
      });
      const checkboxes = document.querySelectorAll("tr input.action-select");
      if (swapped && window.Actions && checkboxes.length) {
        // The changelist's own script: the select-all box and the "0 of N selected" counter.
        window.Actions(checkboxes);
      }
    }

    async function tick() {
      timer = null;
      if (!toggle.checked) {
        return;
      }
      if (pause && document.querySelector(pause)) {
        say("Live: paused while rows are selected.");
      } else {
        try {
          refresh(await read());
          failures = 0;
          say("Live: refreshed at " + clock() + ".");
        } catch (error) {
          failures += 1;
          say("Live: paused (" + error.message + "); retrying.");
        }
      }
      // Back off while the server does not answer (signed out, restarting).
      timer = window.setTimeout(tick, INTERVAL_MS * Math.min(1 + failures, 12));
    }

    function apply() {
      try {
        window.localStorage.setItem(key, toggle.checked ? "on" : "off");
      } catch (error) {
        // Private windows may refuse storage: the toggle still works for this page.
      }
      if (timer !== null) {
        window.clearTimeout(timer);
        timer = null;
      }
      if (toggle.checked) {
        tick();
      } else {
        say("Not refreshing.");
      }
    }

    try {
      toggle.checked = window.localStorage.getItem(key) === "on";
    } catch (error) {
      toggle.checked = false;
    }
    toggle.addEventListener("change", apply);
    apply();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
