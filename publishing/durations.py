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


def time_ago(seconds: float) -> str:
    """How long ago, to the largest unit: `just now`, `42 s ago`, `3 min ago`, `2 h ago`, `5 days ago`."""
    seconds = max(int(seconds), 0)
    if seconds < 5:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            plural = "s" if unit == "day" and count > 1 else ""
            return f"{count} {unit}{plural} ago"
    return f"{seconds} s ago"
