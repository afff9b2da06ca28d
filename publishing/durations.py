"""Durations as people read them, for the pages (the admin, the login pages' refusals)."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 03 min`."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def rough_duration(seconds: float) -> str:
    """One unit, rounded down, for "... ago": `42 s`, `3 min`, `2 h`, `5 d`."""
    seconds = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
