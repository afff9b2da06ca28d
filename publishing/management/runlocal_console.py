"""runlocal's terminal: each process's lines under its name, and one status line kept below them."""

from __future__ import annotations

import threading
from typing import IO, TextIO

# ANSI colours of the prefixes, on a terminal only: a log file or a pipe gets the plain text.
_COLOURS = {"web": "36", "worker": "35", "redis": "31"}
_RESET = "\033[0m"
_CLEAR_LINE = "\r\033[K"


class Console:
    """Whole lines from several threads; on a terminal, a status line redrawn in place below them."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        # True once the reader went away (`make run | head` after its lines): what follows is dropped.
        self.closed = False
        self._lock = threading.Lock()
        self._status = ""

    def prefix(self, name: str) -> str:
        label = f"{name:<6} |"
        return f"\033[{_COLOURS.get(name, '0')}m{label}{_RESET} " if self.tty else f"{label} "

    def say(self, text: str, *, name: str = "") -> None:
        """One line, under `name`'s prefix when given (runlocal's own lines have none)."""
        line = f"{self.prefix(name)}{text}" if name else text
        with self._lock:
            self._write((_CLEAR_LINE if self._status else "") + line + "\n" + self._status)

    def status(self, text: str) -> None:
        """On a terminal, (re)draw the status line in place; elsewhere, write it as a line."""
        if not self.tty:
            self.say(text)
            return
        with self._lock:
            self._status = text
            self._write(_CLEAR_LINE + text)

    def end_status(self) -> None:
        """Leave the status line as it stands: what follows starts on a line of its own."""
        with self._lock:
            if self._status:
                self._write("\n")
            self._status = ""

    def _write(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            # The relays go on reading (a child blocked on a full pipe would hang): runlocal sees
            # `closed` and stops everything as on Ctrl-C.
            self.closed = True

    def relay(self, name: str, pipe: IO[bytes]) -> threading.Thread:
        """Copy `pipe`'s lines under `name`'s prefix until it closes, in a thread of its own."""

        def copy() -> None:
            with pipe:
                for raw in iter(pipe.readline, b""):
                    self.say(raw.decode(errors="replace").rstrip("\r\n"), name=name)

        thread = threading.Thread(target=copy, name=f"runlocal-{name}", daemon=True)
        thread.start()
        return thread
