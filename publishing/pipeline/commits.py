"""What the checkout asks git for and what it got: ref and commit names checked before git sees them,
a given commit fetched once it is known to be in the history of the ref, and the commit a checkout
holds, read by git from the checkout itself (never taken from a ref's name).

The git commands run through the checkout's own runner (`checkout.py`: no shell, no worker
configuration, a timeout), handed in as a `Git`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from publishing.exceptions import PermanentJobError
from publishing.pipeline.base import Commit

logger = logging.getLogger(__name__)

# Runs `git <args>`; returns its exit status and standard error.
Git = Callable[[Sequence[str]], tuple[int, str]]

# One commit: its id, author and subject (git folds the subject's paragraph into one line), each
# ended by a NUL, which none of them can hold.
COMMIT_FORMAT = "%H%x00%an <%ae>%x00%s%x00"
COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-fA-F]+")
# Characters git refuses in ref names anyway; refusing them early gives a clearer error.
_REF_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f~^:?*\[\\]")
# What git answers when a fetched ref does not exist.
_NO_SUCH_REF = "couldn't find remote ref"
# A user writes them: control characters would reach the log, the admin and the store's manifest.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SUBJECT_LIMIT = 500
AUTHOR_LIMIT = 255
# How much of git's standard error a failure's detail quotes.
_STDERR_LIMIT = 500


def validate_ref(ref: str) -> None:
    """Raise PermanentJobError("REF_INVALID") for a ref that could be read as an option or is no ref name."""
    if not ref or ref.startswith("-") or ".." in ref or "@{" in ref or _REF_FORBIDDEN.search(ref):
        raise PermanentJobError(f"invalid branch or tag name {ref!r}", code="REF_INVALID")


def parse_commit(value: str) -> str:
    """`value` as a commit to publish: a full commit id (lower-cased) or a tag name, else PermanentJobError
    (COMMIT_INVALID). All hex digits is a commit id, whatever its length: a short one is refused."""
    if _HEX.fullmatch(value):
        if len(value) not in (40, 64):
            raise PermanentJobError(
                f"a commit id has 40 hex digits (64 in a SHA-256 repository), not {len(value)}",
                code="COMMIT_INVALID",
            )
        return value.lower()
    try:
        validate_ref(value)
    except PermanentJobError:
        raise PermanentJobError(
            f"{value!r} is neither a full commit id nor a tag name", code="COMMIT_INVALID"
        ) from None
    return value


def fetch_commit(git: Git, *, url: str, ref: str, commit: str, dest: Path) -> tuple[int, str]:
    """Check `commit` (as `parse_commit` gives it) of `url` out at `dest`, detached, once it is known to
    be in the history of `ref`; return (0, "") or the exit status and error of the git command that
    failed, for the caller to classify. PermanentJobError (COMMIT_NOT_FOUND) when it is not there.

    The commit alone comes first (`--depth 1`), where the server lets a commit be fetched by its id
    (GitHub does, and git's protocol v2 for a reachable one); then the history of `ref` down to it,
    which shows whether it is there. A server that refuses sends that history whole.
    """
    is_id = COMMIT_ID.fullmatch(commit) is not None
    target = commit if is_id else f"refs/tags/{commit}"
    here = ["-C", str(dest)]
    returncode, stderr = git(["init", "--quiet", str(dest)])
    if returncode != 0:
        return returncode, stderr
    spec = target if is_id else f"{target}:{target}"
    returncode, stderr = git([*here, "fetch", "--quiet", "--no-tags", "--depth", "1", "--", url, spec])
    if returncode != 0 and not is_id:
        if _NO_SUCH_REF in stderr:
            raise PermanentJobError(f"the repository has no tag {commit!r}", code="COMMIT_NOT_FOUND")
        return returncode, stderr
    if returncode != 0:
        logger.info("fetching commit %s by its id failed (%s); fetching %s whole", commit, _said(stderr), ref)
    returncode, stderr = git([*here, "fetch", "--quiet", "--no-tags", "--", url, ref])
    if returncode != 0:
        return returncode, stderr
    if git([*here, "cat-file", "-e", f"{target}^{{commit}}"])[0] != 0:
        raise PermanentJobError(f"no commit {commit} in the history of {ref!r}", code="COMMIT_NOT_FOUND")
    returncode, stderr = git([*here, "merge-base", "--is-ancestor", target, "FETCH_HEAD"])
    if returncode == 1:
        raise PermanentJobError(
            f"{commit} is not in the history of {ref!r}: only its commits may be published under it",
            code="COMMIT_NOT_FOUND",
        )
    if returncode != 0:
        return returncode, stderr
    return git([*here, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", target])


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
        raise PermanentJobError(
            f"the checked-out commit cannot be read: {_said(stderr)}", code="CHECKOUT_FAILED"
        )
    return Commit(
        sha=fields[0],
        subject=_printable(fields[2], SUBJECT_LIMIT),
        author=_printable(fields[1], AUTHOR_LIMIT),
    )


def _printable(text: str, limit: int) -> str:
    text = _CONTROL.sub("\ufffd", text.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _said(stderr: str) -> str:
    return " ".join(stderr.split())[-_STDERR_LIMIT:]
