"""The package layout's rules (pipeline/__init__.py): which way imports go, no circles, no private names.

Read from the source with `ast`, so every import counts: top-level, inside functions (the lazy
ones) and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

# The layer of each package, and the layers it may import from (besides its own).
LAYERS = {
    "root": set(),
    "data": {"root"},
    "runs": {"root", "data"},
    "training": {"root", "data", "runs", "models"},
    "deploy": {"root", "data", "runs", "training", "models"},
    "bench": {"root", "data", "runs", "training", "deploy", "models"},
    "tools": {"root", "data", "runs", "training"},
    "models": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("pipeline", "models") for p in sorted((REPO / pkg).rglob("*.py"))}


# Entry modules at the package root (`python -m pipeline.export`) that call one layer: they belong to it.
ENTRY_MODULES = {"pipeline.export": "deploy", "pipeline.predict": "deploy"}


# Packages of the root layer (pipeline/config/: the schema, its checks, loading and reference): the root's rules
# hold for every module in them.
ROOT_PACKAGES = {"config"}


def layer(module: str) -> str:
    if module in ENTRY_MODULES:
        return ENTRY_MODULES[module]
    parts = module.split(".")
    if parts[0] == "models":
        return "models"
    if len(parts) > 1 and parts[1] in ROOT_PACKAGES:
        return "root"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "root"


def imports(path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import of a project module in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] in ("pipeline", "models")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("pipeline", "models"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub, []) if sub in known else (node.module, [alias.name]))
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        graph[name] = {target for target, _ in imports(path, set(mods)) if target in mods and target != name}
    return graph


def test_imports_go_down_the_layers():
    wrong = []
    for module, targets in import_graph().items():
        own = layer(module)
        for target in targets:
            other = layer(target)
            if other != own and other not in LAYERS[own]:
                wrong.append(f"{module} ({own}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = import_graph()
    # Tarjan's strongly connected components: any component with more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_no_module_imports_another_modules_private_names():
    mods = modules()
    private = [f"{name} imports {name_!r} from {target}"
               for name, path in mods.items() for target, names in imports(path, set(mods))
               for name_ in names if name_.startswith("_") and name_ != "__version__"]
    assert not private, "\n".join(private)


def test_the_benchmarks_do_not_import_the_trainer():
    graph = import_graph()
    assert not [m for m, targets in graph.items() if layer(m) == "bench" and "pipeline.training.trainer" in targets]


def test_the_layering_check_sees_real_imports():
    """The checks above read the imports that are there (a guard against a parser that sees none)."""
    graph = import_graph()
    assert "pipeline.training.step" in graph["pipeline.training.evaluation"]
    assert "pipeline.runs.records" in graph["pipeline.training.trainer"]
    assert "pipeline.distributed" in graph["pipeline.entry"]  # a lazy import inside a function
    assert layer("pipeline.config") == "root" and layer("pipeline.data.loader") == "data"
    assert layer("pipeline.config.schema") == "root" and "pipeline.config.schema" in graph["pipeline.config.loading"]
    assert layer("pipeline.training") == "training" and layer("models.squeezenet") == "models"


def test_the_trainer_stays_short():
    """Trainer is the loop and its bookkeeping; how a run ends, its parts and its records live beside it
    (the layout issue set <= 200 lines: past that, something belongs in a module of its own)."""
    tree = ast.parse((REPO / "pipeline" / "training" / "trainer.py").read_text())
    (trainer,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    assert trainer.end_lineno - trainer.lineno + 1 <= 200


def test_run_readers_load_no_torch():
    """compare and the launcher's Python half read run directories; importing torch would cost them
    ~2 s a call (runs/metrics.py promises it): what they import stays torch-free."""
    import subprocess
    import sys

    code = "import sys, pipeline.tools.compare, pipeline.tools.launch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

