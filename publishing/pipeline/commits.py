"""Which commit a checkout holds, read by git from the checkout itself (never taken from the ref's name).

The git commands run through the checkout's own runner (`checkout.py`: no shell, no worker
configuration, a timeout), handed in as a `Git`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from publishing.exceptions import PermanentJobError
from publishing.pipeline.base import Commit

# Runs `git <args>`; returns its exit status and standard error.
Git = Callable[[Sequence[str]], tuple[int, str]]

# One commit: its id, author and subject (git folds the subject's paragraph into one line), each
# ended by a NUL, which none of them can hold.
COMMIT_FORMAT = "%H%x00%an <%ae>%x00%s%x00"
COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# A user writes them: control characters would reach the log, the admin and the store's manifest.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SUBJECT_LIMIT = 500
AUTHOR_LIMIT = 255
# How much of git's standard error a failure's detail quotes.
_STDERR_LIMIT = 500


def read_commit(git: Git, source: Path, *, scratch: Path) -> Commit:
    """The commit checked out at `source`; PermanentJobError (CHECKOUT_FAILED) if git cannot say.

    `scratch` is a private folder outside the checkout for git's answer (the runner keeps no standard output).
    """
    answer = scratch / "commit"
    # The repository named, not searched for: git must never read a folder above the checkout.
    git_dir = f"--git-dir={source / '.git'}"
    returncode, stderr = git(
        [git_dir, "log", "-1", f"--format={COMMIT_FORMAT}", f"--output={answer}", "HEAD", "--"]
    )
    fields = answer.read_text(encoding="utf-8", errors="replace").split("\x00") if answer.exists() else []
    if returncode != 0 or len(fields) < 3 or not COMMIT_ID.fullmatch(fields[0]):
        said = " ".join(stderr.split())[-_STDERR_LIMIT:]
        raise PermanentJobError(f"the checked-out commit cannot be read: {said}", code="CHECKOUT_FAILED")
    return Commit(
        sha=fields[0],
        subject=_printable(fields[2], SUBJECT_LIMIT),
        author=_printable(fields[1], AUTHOR_LIMIT),
    )


def _printable(text: str, limit: int) -> str:
    text = _CONTROL.sub("\ufffd", text.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"
