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
        self._lock = threading.Lock()
        self._status = ""

    def prefix(self, name: str) -> str:
        label = f"{name:<6} |"
        return f"\033[{_COLOURS.get(name, '0')}m{label}{_RESET} " if self.tty else f"{label} "

    def say(self, text: str, *, name: str = "") -> None:
        """One line, under `name`'s prefix when given (runlocal's own lines have none)."""
        line = f"{self.prefix(name)}{text}" if name else text
        with self._lock:
            if self._status:
                self.stream.write(_CLEAR_LINE)
            self.stream.write(line + "\n")
            if self._status:
                self.stream.write(self._status)
            self.stream.flush()

    def status(self, text: str) -> None:
        """On a terminal, (re)draw the status line in place; elsewhere, write it as a line."""
        if not self.tty:
            self.say(text)
            return
        with self._lock:
            self._status = text
            self.stream.write(_CLEAR_LINE + text)
            self.stream.flush()

    def end_status(self) -> None:
        """Leave the status line as it stands: what follows starts on a line of its own."""
        with self._lock:
            if self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""

    def relay(self, name: str, pipe: IO[bytes]) -> threading.Thread:
        """Copy `pipe`'s lines under `name`'s prefix until it closes, in a thread of its own."""

        def copy() -> None:
            with pipe:
                for raw in iter(pipe.readline, b""):
                    self.say(raw.decode(errors="replace").rstrip("\r\n"), name=name)

        thread = threading.Thread(target=copy, name=f"runlocal-{name}", daemon=True)
        thread.start()
        return thread
