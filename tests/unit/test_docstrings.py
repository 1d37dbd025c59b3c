"""Usage examples in docstrings call what the code offers, with arguments its signatures take.

Module, class and function docstrings in pipeline/ and models/ show usage as indented lines
(`manager = CheckpointManager(cfg.checkpoint, run_dir, dist, config, epochs)`). Every such line
that parses as Python (continued lines joined while a bracket is open) is read with `ast`; each
call whose callee resolves in the module (a name it defines or imports, a class's method, or a
method of a variable an earlier line assigned from a class or from a function annotated to return
one) is checked with `inspect.signature(...).bind` on as many positional and keyword arguments as
the example passes. Calls on values the example does not define (`cfg.data.train`) are not
checked, nor are `python -m ...` command lines, which are not Python.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.constants import REPO_ROOT as REPO

HOLE = object()  # a placeholder argument: only the count and the names matter to bind()


@dataclass(frozen=True)
class Example:
    where: str  # "pipeline/training/checkpoint.py:CheckpointManager"
    code: str
    scope: Any  # the module, class or function whose docstring holds it


def without_comment(line: str) -> str:
    """`line` up to a `#` outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return line[:i].rstrip()
    return line.rstrip()


def example_snippets(doc: str) -> Iterator[str]:
    """The indented lines of `doc` that parse as Python (comments dropped), a line continued while a bracket
    is open."""
    buffer: list[str] = []
    for raw in doc.splitlines():
        code = without_comment(raw.strip())
        if not raw.startswith("    ") or not raw.strip():
            buffer = []
            continue
        if not code:
            continue
        buffer.append(code)
        text = " ".join(buffer)
        try:
            ast.parse(text)
        except SyntaxError:
            opened = sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")
            if opened <= 0 or len(buffer) > 4:
                buffer = []
            continue
        buffer = []
        yield text


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def examples() -> list[Example]:
    found = []
    for path in sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "models").rglob("*.py")]):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        holders = [("", tree), *((n.name, n) for n in ast.walk(tree)
                                 if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
        snippets = [(name, code) for name, node in holders for code in
                    example_snippets(ast.get_docstring(node, clean=False) or "")]
        if not snippets:
            continue
        module = importlib.import_module(module_name(path))
        rel = str(path.relative_to(REPO))
        found += [Example(f"{rel}:{name}" if name else rel, code, module) for name, code in snippets]
    return found


Callee = tuple[Any, bool]  # (a callable, whether it is a function taken from a class: self is one more argument)


def resolve(node: ast.expr, names: dict[str, Any], instances: dict[str, tuple[type, ...]]) -> list[Callee]:
    """What the call's callee `node` may be: one callable, one method per class a variable may hold (`X | Y`),
    or nothing when it cannot be resolved."""
    if isinstance(node, ast.Name) and node.id in instances:  # an instance called: its __call__
        return [method_of(cls, "__call__") for cls in instances[node.id]]
    if isinstance(node, ast.Name):
        found = names.get(node.id, PROJECT.get(node.id))
        return [(found, False)] if found is not None else []
    if not isinstance(node, ast.Attribute):
        return []
    if isinstance(node.value, ast.Name) and node.value.id in instances:
        return [method_of(cls, node.attr) for cls in instances[node.value.id]]
    owners = resolve(node.value, names, instances)
    if len(owners) != 1 or not (inspect.ismodule(owners[0][0]) or inspect.isclass(owners[0][0])):
        return []
    owner = owners[0][0]
    if inspect.isclass(owner):
        return [method_of(owner, node.attr)]
    found = getattr(owner, node.attr, None)
    return [(found, False)] if found is not None else []


def method_of(cls: type, name: str) -> Callee:
    """`cls.name` as an example calls it on an instance (or on the class, for a class or static method)."""
    attr = inspect.getattr_static(cls, name, None)
    if isinstance(attr, (staticmethod, classmethod)):
        return getattr(cls, name), False
    return (attr, True) if inspect.isfunction(attr) else (None, False)


def returned_classes(callees: list[Callee], names: dict[str, Any]) -> tuple[type, ...]:
    """The classes a call may give: a class called, or a function's return annotation naming classes
    (`X | Y | None`: X and Y); empty when any part is not a class."""
    if len(callees) != 1:
        return ()
    target = callees[0][0]
    if inspect.isclass(target):
        return (target,)
    annotation = getattr(target, "__annotations__", {}).get("return") if callable(target) else None
    if not isinstance(annotation, str):
        return (annotation,) if inspect.isclass(annotation) else ()
    parts = [part.strip(" '\"") for part in annotation.split("|")]
    classes = tuple(names.get(part, PROJECT.get(part)) for part in parts if part != "None")
    return classes if classes and all(inspect.isclass(c) for c in classes) else ()


def project_names() -> dict[str, Any]:
    """Public functions and classes defined in pipeline/ and models/ under a name no other module defines: what an
    example may call without its module importing it (`build_components` in checkpoint.py's)."""
    seen: dict[str, list[Any]] = {}
    for path in sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "models").rglob("*.py")]):
        if path.name == "__main__.py":
            continue
        module = importlib.import_module(module_name(path))
        for name, obj in vars(module).items():
            if (not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                    and obj.__module__ == module.__name__):
                seen.setdefault(name, []).append(obj)
    return {name: objs[0] for name, objs in seen.items() if len(objs) == 1}


def check_all(found: list[Example]) -> tuple[int, list[str]]:
    """Every example, in order per docstring: a variable assigned from a class in one line is known in the next.
    Returns (calls checked, what does not bind)."""
    checked, wrong = 0, []
    by_doc: dict[str, list[Example]] = {}
    for example in found:
        by_doc.setdefault(example.where, []).append(example)
    for group in by_doc.values():
        instances: dict[str, tuple[type, ...]] = {}
        for example in group:
            n, bad = check_example(example, instances)
            checked, wrong = checked + n, wrong + bad
    return checked, wrong


def check_example(example: Example, instances: dict[str, tuple[type, ...]]) -> tuple[int, list[str]]:
    names = dict(vars(example.scope))
    tree = ast.parse(example.code)
    checked, wrong = 0, []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        for target, method in resolve(node.func, names, instances):
            if target is None or not callable(target):
                continue
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):  # a builtin without one
                continue
            try:
                signature.bind(*[HOLE] * (len(node.args) + method), **{k.arg: HOLE for k in node.keywords})
            except TypeError as exc:
                wrong.append(f"{example.where}: `{ast.unparse(node)}` does not fit "
                             f"{getattr(target, '__qualname__', target)}{signature} ({exc})")
            checked += 1
    for statement in tree.body:  # what later lines may call methods of
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call):
            classes = returned_classes(resolve(statement.value.func, names, instances), names)
            for name in statement.targets:
                if isinstance(name, ast.Name) and classes:
                    instances[name.id] = classes
                elif isinstance(name, ast.Name):
                    instances.pop(name.id, None)
    return checked, wrong


PROJECT = project_names()


FOUND = examples()


def test_docstring_examples_call_with_arguments_the_signatures_take():
    checked, wrong = check_all(FOUND)
    assert not wrong, "\n".join(wrong)
    assert checked >= 100, f"only {checked} calls checked: the reader no longer finds the examples"


def test_the_example_reader_joins_continued_lines_and_finds_a_wrong_call():
    doc = """Usage.

        manager = CheckpointManager(cfg.checkpoint, run_dir, dist,
                                    config)                  # a line continued
        manager.save_epoch(parts, counters, new_best=True, extra=1)
        python -m pipeline.bench loader configs/quickstart.yaml
    """
    snippets = list(example_snippets(doc))
    assert snippets == ["manager = CheckpointManager(cfg.checkpoint, run_dir, dist, config)",
                        "manager.save_epoch(parts, counters, new_best=True, extra=1)"]
    module = importlib.import_module("pipeline.training.checkpoint")
    checked, wrong = check_all([Example("x.py", code, module) for code in snippets])
    assert checked == 2 and len(wrong) == 2
    assert "CheckpointManager(cfg.checkpoint, run_dir, dist, config)" in wrong[0] and "epochs" in wrong[0]
    assert "manager.save_epoch" in wrong[1] and "extra" in wrong[1]

