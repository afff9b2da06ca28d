"""Every status write in the product code goes through `PublishingQuerySet.transition`.

So every move a publishing makes is one that `Publishing.TRANSITIONS` lists (test_models checks the
table move by move). Read from the code itself: a write of `status` anywhere else, to a Publishing
row or instance, fails here with its place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import publishing

PACKAGE = Path(publishing.__file__).parent
# The one function that moves a status, and the insert that creates a publishing as queued.
ALLOWED = {("models/publishings.py", "transition"), ("models/publishings.py", "insert_queued")}
WRITES = {"update", "create", "bulk_create", "bulk_update", "update_or_create", "get_or_create"}


def _mentions_publishing(node: ast.AST) -> bool:
    # `self`: the methods of PublishingQuerySet write through themselves.
    return any(isinstance(n, ast.Name) and n.id in ("Publishing", "self") for n in ast.walk(node))


def _status_keys(function: ast.AST) -> set[str]:
    """The names of dicts built in `function` with a "status" key (literal or subscript assignment)."""
    names: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if "status" in keys:
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and isinstance(target.slice, ast.Constant)
                    and target.slice.value == "status"
                ):
                    names.add(target.value.id)
    return names


def status_writes(source: str) -> list[tuple[str, int]]:
    """(function, line) of each write of a publishing's status in `source`."""
    found: list[tuple[str, int]] = []
    tree = ast.parse(source)
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        dicts_with_status = _status_keys(function)
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == "status" for t in node.targets
            ):
                found.append((function.name, node.lineno))
            if not isinstance(node, ast.Call):
                continue
            is_write = isinstance(node.func, ast.Attribute) and node.func.attr in WRITES
            is_new = isinstance(node.func, ast.Name) and node.func.id == "Publishing"
            if not (is_new or (is_write and _mentions_publishing(node.func))):
                continue
            for keyword in node.keywords:
                value = keyword.value
                spread = keyword.arg is None and isinstance(value, ast.Name) and value.id in dicts_with_status
                if keyword.arg == "status" or spread:
                    found.append((function.name, node.lineno))
    return sorted(set(found), key=lambda item: item[1])


def test_the_check_finds_each_way_of_writing_a_status() -> None:
    source = """
def by_keyword(pk):
    Publishing.objects.filter(pk=pk).update(status="queued")

def by_values(pk):
    values = {"status": "queued", "updated_at": 1}
    Publishing.objects.filter(pk=pk).update(**values)

def by_subscript(pk):
    values = {"updated_at": 1}
    values["status"] = "failed"
    Publishing.objects.filter(pk=pk).update(**values)

def by_instance(publishing):
    publishing.status = "published"
    publishing.save()

def by_constructor():
    Publishing(status="building").save()

def not_a_status_write(pk):
    Publishing.objects.filter(pk=pk, status="queued").update(progress=5)
    WebhookDelivery.objects.filter(pk=pk).update(state="failed")
    return {"status": "ok"}
"""
    assert [name for name, _ in status_writes(source)] == [
        "by_keyword",
        "by_values",
        "by_subscript",
        "by_instance",
        "by_constructor",
    ]


def test_every_status_write_goes_through_transition() -> None:
    writes = [
        (str(path.relative_to(PACKAGE)), function, line)
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
        for function, line in status_writes(path.read_text())
    ]
    assert {(path, function) for path, function, _ in writes} <= ALLOWED, [
        f"publishing/{path}:{line} ({function}) writes a status outside Publishing.objects.transition"
        for path, function, line in writes
        if (path, function) not in ALLOWED
    ]
    # And the allowed places still exist (a rename would leave this test checking nothing)
    assert {(path, function) for path, function, _ in writes} == ALLOWED
