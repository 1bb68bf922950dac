"""The package's import graph keeps the pipeline's shape: no cycles, no import of a higher stage by a
lower one, TVM only in the compile stage. Imports inside functions count; ``if TYPE_CHECKING:``
imports (for annotations only, never executed) do not. docs/architecture.md describes the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import edgesdk
import edgesdk.plugin
import edgesdk_plugins

PACKAGE = Path(edgesdk.__file__).parent

# Low to high: a module may import its own layer and the ones below (a module's layer is the
# longest entry that prefixes its name).
LAYERS = [
    ["edgesdk.errors", "edgesdk.versions", "edgesdk.progress"],
    ["edgesdk.devices.profile"],
    ["edgesdk.plugin"],
    ["edgesdk.devices"],
    ["edgesdk.frontend"],
    ["edgesdk.quantization"],
    ["edgesdk.training"],
    ["edgesdk.compile"],
    ["edgesdk.simulate"],
    ["edgesdk.artifact"],
    ["edgesdk.report"],
    ["edgesdk.distributed"],
    ["edgesdk.verbs"],
    ["edgesdk"],
    ["edgesdk.cli", "edgesdk.__main__", "edgesdk.reference_docs"],
    ["edgesdk.testing"],
]
TVM_STAGES = ("edgesdk.compile",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Every module ``tree`` imports at run time, wherever the import statement is."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join([*anchor[: len(anchor) - node.level + 1], *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    trees = {module_name(path): (ast.parse(path.read_text()), path.name == "__init__.py") for path in sorted(PACKAGE.rglob("*.py"))}
    modules = set(trees)
    # Importing a.b.c runs a.b's __init__ first: an edge, when that __init__ imports anything (from
    # outside a.b: a module inside it runs only once its __init__ has started).
    runs_init = {name for name, (tree, is_package) in trees.items() if is_package and name != "edgesdk" and imported(tree, name, True)}
    graph: dict[str, set[str]] = {}
    for name, (tree, is_package) in trees.items():
        edges = set()
        for target in imported(tree, name, is_package):
            if target in modules:
                edges.add(target)
            parts = target.split(".")
            parents = (".".join(parts[:n]) for n in range(2, len(parts)))
            edges.update(parent for parent in parents if parent in runs_init and not name.startswith(parent + "."))
        graph[name] = edges - {name}
    return graph


def layer(module: str) -> int:
    best, level = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    assert level >= 0, f"{module} is in no layer: add it to LAYERS and to docs/architecture.md"
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_stage_imports_a_higher_one():
    upward = sorted(f"{source} -> {target}" for source, targets in import_graph().items() for target in targets if layer(target) > layer(source))
    assert upward == []


def test_only_the_compile_stage_imports_tvm():
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        tvm = {target for target in imported(ast.parse(path.read_text()), name, path.name == "__init__.py") if target.split(".")[0] in ("tvm", "tvm_ffi")}
        if tvm and not name.startswith(TVM_STAGES):
            outside.append(f"{name}: {', '.join(sorted(tvm))}")
    assert outside == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    graph = {"edgesdk.frontend.a": {"edgesdk.compile.b"}, "edgesdk.compile.b": {"edgesdk.frontend.a"}}
    assert cycles(graph) == [["edgesdk.compile.b", "edgesdk.frontend.a"]]
    assert layer("edgesdk.compile.b") > layer("edgesdk.frontend.a") > layer("edgesdk.plugin.manager") > layer("edgesdk.devices.profile")
    tree = ast.parse("def f():\n    from edgesdk.verbs import deploy\nif TYPE_CHECKING:\n    import tvm\n")
    assert imported(tree, "edgesdk.frontend.a", False) == {"edgesdk.verbs", "edgesdk.verbs.deploy"}


def test_built_in_plugins_import_only_the_plugin_module():
    """They are written as a third-party plugin is: from `edgesdk.plugin`, nothing deeper."""
    allowed = {"edgesdk.plugin", *(f"edgesdk.plugin.{name}" for name in edgesdk.plugin.__all__)}
    outside = {}
    for path in sorted(Path(edgesdk_plugins.__file__).parent.glob("*.py")):
        targets = imported(ast.parse(path.read_text()), f"edgesdk_plugins.{path.stem}", path.name == "__init__.py")
        outside[path.name] = sorted(target for target in targets if target.split(".")[0] == "edgesdk" and target not in allowed)
    assert len(outside) >= 7 and all(found == [] for found in outside.values()), outside
    deeper = imported(ast.parse("from edgesdk.plugin.manager import collect\nfrom edgesdk import deploy\n"), "edgesdk_plugins.x", False)
    assert {"edgesdk.plugin.manager", "edgesdk.deploy"} <= deeper - allowed  # what the check refuses
