"""Each operation's name and description: one text for the OpenAPI schema and the browsable API's page.

`button` names what a page's POST button does (empty: the form has none of its own).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str
    button: str = ""


PUBLISHING_OPERATIONS = {
    "list": Operation(
        "List publishings",
        "Yours and those of your projects (everyone's with the view_publishing permission), newest first; "
        "filter by `status` and `project`. The log and the attempts are in the detail.",
    ),
    "retrieve": Operation(
        "Show a publishing",
        "Its status and progress, the artifact, the log and every attempt (worker, start, end, outcome, "
        "error). Poll it, or follow `cancel` and `retry`.",
    ),
    "initiate": Operation(
        "Publish a project",
        "The head of the project's ref, or with `commit` a given commit of its history (a rollback when it "
        "was published before: the same artifact again). At most PUBLISHING_INITIATE_RATE calls per user "
        "(60 a minute by default), together with retry and re-run; beyond it, 429 with Retry-After.",
        button="Publish",
    ),
    "cancel": Operation(
        "Cancel a publishing",
        "Cancel a queued, waiting or running publishing; a running build is stopped.",
        button="Cancel publishing",
    ),
    "retry": Operation(
        "Retry a publishing",
        "Queue a failed or cancelled publishing again.",
        button="Retry publishing",
    ),
    "rerun": Operation(
        "Re-run a publishing",
        "Queue a new publishing of the commit a finished one checked out (any outcome, published too).\n\n"
        "Publishing an earlier commit again gives the same artifact: a rollback. The new publishing runs "
        "with the project's settings of now; one that never got to its checkout is re-run with the commit "
        "it asked for (the ref's head if none).",
        button="Re-run publishing",
    ),
    "log": Operation(
        "A publishing's log",
        "The lines of its steps' output and of what Publisher did, oldest first; `?since=` a cursor for "
        "only the newer ones, which is how a page or a terminal follows a running publishing.",
    ),
}

PROJECT_OPERATIONS = {
    "list": Operation(
        "List your projects",
        "Your projects, by name (everyone's with the view_project permission).",
    ),
    "create": Operation(
        "Create a project",
        "Where the source is, how to build it, where to submit the artifact, and optionally a webhook that "
        "hears of every terminal status. The slug defaults to the name, slugified.",
        button="Create project",
    ),
    "retrieve": Operation(
        "Show a project",
        "What it builds and where it submits the artifact; credentials in its URLs show as `***`. PATCH "
        "changes it, DELETE removes it (its publishings are kept).",
    ),
    "partial_update": Operation(
        "Change a project",
        "Only the fields sent change; no fields (an empty body or form) change nothing. A multipart body "
        "that is no form (no named part) is 400 VALIDATION_ERROR. Publishings already initiated keep the "
        "settings they were initiated with. Setting a build command needs the set_build_command permission; "
        "without it, the repository or ref of a project that has one change only with "
        '`"build_command": ""` in the same request (the command is bound to the code it was approved for). '
        "403 for a project you may see but not change.",
    ),
    "destroy": Operation(
        "Delete a project",
        "Refused while one of its publishings is active; its publishings are kept.",
    ),
}
