// The publishing page, live: follow the log through the API and put each line in its step; when
// Publisher says something (an event) or the log completes, draw the summary again from the server
// (?fragment=summary: the one rendering of header, steps and attempts). Stops once the log is complete.
// Every request answers at once: a poll is one log call, plus the summary only after an event.
(function () {
  "use strict";
  const POLL_MS = 2000;
  const MAX_BACKOFF_MS = 30000;
  // The failed step's last lines of output, marked: where its error most likely is.
  const TAIL_LINES = 5;

  const root = document.getElementById("pub");
  if (!root) {
    return;
  }
  const summary = document.getElementById("pub-summary");
  const note = document.getElementById("pub-live");
  const logUrl = root.dataset.logUrl;
  const summaryUrl = root.dataset.summaryUrl;
  const drawnComplete = root.dataset.complete === "true";
  // Every line so far, with its row: drawing the summary again moves the rows into the new steps.
  const placed = [];
  // Steps and attempts the reader opened or closed: kept so across redraws.
  const toggled = {};
  let cursor = "0";
  let first = true;
  let failures = 0;

  // Microseconds since the epoch of an ISO time ("...T12:00:01.123456Z" or "+00:00"): a step's window
  // and an event's time compare to the microsecond, which Date alone cannot.
  function micros(text) {
    const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/.exec(text || "");
    if (!match) {
      return NaN;
    }
    const fraction = ((match[2] || "") + "000000").slice(0, 6);
    return Date.parse(match[1] + (match[3] || "Z")) * 1000 + parseInt(fraction, 10);
  }

  // As publishing/durations.py words it.
  function humanDuration(seconds) {
    seconds = Math.max(Math.floor(seconds), 0);
    if (seconds < 60) {
      return seconds + " s";
    }
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return minutes + " min " + String(seconds % 60).padStart(2, "0") + " s";
    }
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function tick() {
    const now = Date.now();
    summary.querySelectorAll("[data-clock]").forEach(function (clock) {
      const at = micros(clock.dataset.at) / 1000;
      if (clock.dataset.clock === "since") {
        clock.textContent = humanDuration((now - at) / 1000);
      } else {
        const left = (at - now) / 1000;
        clock.textContent = left >= 1 ? "in " + humanDuration(left) : "due now";
      }
    });
  }

  // The attempt a line belongs to: its own, else the newest before it (attempt 0's lines, before any
  // attempt, go to the first), else the oldest shown.
  function attemptBox(number) {
    let best = null;
    let oldest = null;
    summary.querySelectorAll(".attempt[data-attempt]").forEach(function (box) {
      const n = Number(box.dataset.attempt);
      if (n <= number && (!best || n > Number(best.dataset.attempt))) {
        best = box;
      }
      if (!oldest || n < Number(oldest.dataset.attempt)) {
        oldest = box;
      }
    });
    return best || oldest;
  }

  // An output line goes to its step; an event to the step whose times hold it, else before or after them.
  function containerFor(line) {
    const box = attemptBox(Math.max(line.attempt, 1));
    if (!box) {
      return null;
    }
    if (line.step !== "event") {
      return box.querySelector('[data-log="' + line.step + '"]');
    }
    const at = micros(line.time);
    let after = false;
    for (const step of box.querySelectorAll("[data-step]")) {
      if (!step.dataset.started) {
        continue;
      }
      if (at < micros(step.dataset.started)) {
        break;
      }
      after = true;
      if (!step.dataset.finished || at <= micros(step.dataset.finished)) {
        return step.querySelector("[data-log]");
      }
    }
    return box.querySelector('[data-log="' + (after ? "result" : "setup") + '"]');
  }

  function row(line) {
    const node = document.createElement("div");
    node.className = line.stream === "publisher" ? "ln ln-event" : "ln";
    const time = document.createElement("span");
    time.className = "ln-time";
    time.textContent = (line.time || "").slice(11, 19);
    time.title = line.time;
    const text = document.createElement("span");
    text.className = "ln-text";
    text.textContent = line.text;
    node.append(time, text);
    return node;
  }

  // The reader is at the end of this log (or it is closed): new lines keep it at the end.
  function atEnd(log) {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  }

  function place(entries) {
    const ends = new Map();
    entries.forEach(function (entry) {
      const log = containerFor(entry.line);
      if (!log) {
        return;
      }
      if (!ends.has(log)) {
        ends.set(log, atEnd(log));
      }
      log.appendChild(entry.node);
    });
    ends.forEach(function (wasAtEnd, log) {
      if (wasAtEnd) {
        log.scrollTop = log.scrollHeight;
      }
    });
    mark();
  }

  // Counts on each step, empty steps dimmed, and the failed step's last lines marked.
  function mark() {
    summary.querySelectorAll("details.step").forEach(function (step) {
      const lines = step.querySelectorAll(".ln");
      const count = step.querySelector("[data-count]");
      if (count) {
        count.textContent = lines.length ? lines.length + (lines.length === 1 ? " line" : " lines") : "";
      }
      step.classList.toggle("empty", lines.length === 0);
      if (step.classList.contains("step-failed")) {
        const output = step.querySelectorAll(".ln:not(.ln-event)");
        output.forEach(function (line, index) {
          line.classList.toggle("ln-tail", index >= output.length - TAIL_LINES);
        });
      }
    });
  }

  function remember(event) {
    const head = event.target.closest("summary");
    const details = head && head.parentElement;
    if (details && details.tagName === "DETAILS" && details.id) {
      toggled[details.id] = !details.open;
    }
  }

  async function redraw() {
    const response = await fetch(summaryUrl, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      throw new Error("summary: HTTP " + response.status);
    }
    const html = await response.text();
    const scroll = window.scrollY;
    const logs = {};
    summary.querySelectorAll("details[id] [data-log]").forEach(function (log) {
      logs[log.closest("details").id] = { end: atEnd(log), top: log.scrollTop };
    });
    summary.innerHTML = html;
    Object.keys(toggled).forEach(function (id) {
      const details = document.getElementById(id);
      if (details) {
        details.open = toggled[id];
      }
    });
    place(placed);
    summary.querySelectorAll("details[id] [data-log]").forEach(function (log) {
      const was = logs[log.closest("details").id];
      log.scrollTop = !was || was.end ? log.scrollHeight : was.top;
    });
    window.scrollTo(window.scrollX, scroll);
    tick();
  }

  async function fetchLog() {
    const fresh = [];
    let page;
    do {
      const response = await fetch(logUrl + "?since=" + encodeURIComponent(cursor), {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        throw new Error("log: HTTP " + response.status);
      }
      page = await response.json();
      page.lines.forEach(function (line) {
        fresh.push({ line: line, node: row(line) });
      });
      cursor = page.cursor;
    } while (page.more);
    return { fresh: fresh, complete: page.complete, dropped: page.dropped };
  }

  async function poll() {
    let complete = false;
    try {
      const got = await fetchLog();
      complete = got.complete;
      placed.push.apply(placed, got.fresh);
      const events = got.fresh.some(function (entry) {
        return entry.line.step === "event";
      });
      // The first answer may hold events newer than the page drawn (a running one): draw it again once.
      if ((events && !(first && drawnComplete)) || (complete && !drawnComplete)) {
        await redraw();
      } else {
        place(got.fresh);
      }
      const dropped = got.dropped ? got.dropped + " earlier lines of this log were dropped (its size cap). " : "";
      note.textContent = dropped + (complete ? "" : "Live: following the log.");
      first = false;
      failures = 0;
    } catch (error) {
      failures += 1;
      note.textContent = "Lost touch with the server (" + error.message + "); trying again.";
    }
    if (complete) {
      root.dataset.complete = "true";
      return;
    }
    window.setTimeout(poll, failures ? Math.min(POLL_MS * 2 ** failures, MAX_BACKOFF_MS) : POLL_MS);
  }

  summary.addEventListener("click", remember);
  window.setInterval(tick, 1000);
  poll();
})();
