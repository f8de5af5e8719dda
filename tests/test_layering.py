"""The import layers, checked on the source: every .py file is parsed with ast and its imports are resolved.

    replays/engine   a pure library: no Django, no project module
    traceflux/audit  imports no app (it may use replays.engine); nor do statemachine, prefixed_secrets, signing, metrics
    incidents  <-  artifacts  <-  approvals  <-  replays        (each may import only those to its left)
    traceflux/urls.py, traceflux/views.py   the project layer on top; nothing below imports it
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = "replays.engine"
APPS = ("incidents", "artifacts", "approvals", "replays")
PROJECT_LAYER = ("traceflux.urls", "traceflux.views", "traceflux.explorer", "traceflux.ops")


@dataclass(frozen=True)
class Rule:
    """Files under `where` may not import anything under `forbidden`, except what is under `allowed`."""

    where: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = (ENGINE,)


RULES = (
    Rule("replays/engine", ("django", "traceflux", *APPS)),
    Rule("traceflux/audit", (*APPS, *PROJECT_LAYER)),
    Rule("traceflux/statemachine.py", (*APPS, *PROJECT_LAYER)),
    Rule("traceflux/prefixed_secrets.py", (*APPS, *PROJECT_LAYER)),
    Rule("traceflux/signing.py", (*APPS, *PROJECT_LAYER)),
    Rule("incidents", ("artifacts", "approvals", "replays", *PROJECT_LAYER)),
    Rule("artifacts", ("approvals", "replays", *PROJECT_LAYER)),
    Rule("approvals", ("replays", *PROJECT_LAYER)),
    Rule("replays", PROJECT_LAYER),
    Rule("traceflux/metrics.py", (*APPS, *PROJECT_LAYER)),  # the apps count into it, so it imports none of them
)


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in the file, wherever it sits (functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            for alias in node.names:
                # `from replays import engine` imports replays.engine; `from x import name` is judged as x.name.
                yield node.lineno, f"{prefix}.{alias.name}" if alias.name != "*" else prefix


def python_files(where: str) -> list[Path]:
    target = ROOT / where
    if target.is_file():
        return [target]
    return sorted(p for p in target.rglob("*.py") if "__pycache__" not in p.parts)


def violations(rule: Rule) -> list[str]:
    found = []
    for path in python_files(rule.where):
        for line, module in imported_modules(path):
            if any(under(module, allowed) for allowed in rule.allowed):
                continue
            if any(under(module, forbidden) for forbidden in rule.forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_it_finds_the_files_of_every_layer():
    for rule in RULES:
        assert python_files(rule.where), f"no Python files under {rule.where}: the layering rule checks nothing"
    assert len(python_files("replays/engine")) >= 3
    assert len(python_files("traceflux/audit")) >= 5


def test_it_resolves_relative_imports_to_absolute_modules(tmp_path):
    source = tmp_path / "cli.py"
    source.write_text(
        "from .canonical import spec_hash\nfrom .. import models\nfrom replays import engine\n"
        "import django.db\n\ndef later():\n    from ..views import page\n",
        encoding="utf-8",
    )
    assert list(imported_modules(source, "replays.engine.cli")) == [
        (1, "replays.engine.canonical.spec_hash"),
        (2, "replays.models"),
        (3, "replays.engine"),
        (4, "django.db"),
        (7, "replays.views.page"),
    ]
    assert module_name(ROOT / "replays" / "engine" / "__init__.py") == "replays.engine"


def test_it_keeps_the_engine_a_pure_library():
    problems = violations(RULES[0])
    assert not problems, "replays/engine must not import Django or any project module:\n" + "\n".join(problems)


def test_it_keeps_the_audit_log_free_of_the_apps():
    problems = [problem for rule in RULES[1:5] for problem in violations(rule)]
    assert not problems, "traceflux/audit, statemachine, prefixed_secrets and signing must not import an app:\n" + (
        "\n".join(problems)
    )


def test_it_keeps_each_app_below_the_ones_that_build_on_it():
    problems = [problem for rule in RULES[5:] for problem in violations(rule)]
    assert not problems, "incidents <- artifacts <- approvals <- replays, project layer on top:\n" + "\n".join(problems)
