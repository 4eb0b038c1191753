"""The layout README's "What is here" states, kept true: every import (module level or inside a function)
goes to the same layer or one below, and no modules import each other in a circle."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

# Top to bottom. A module belongs to the longest prefix that names it (`miniend_jax` is the package's
# own __init__ only).
LAYERS = (
    ("miniend_jax.main", "miniend_jax.demo", "miniend_jax.experiment", "miniend_jax.diagnose",
     "miniend_jax.glue_submission", "miniend_jax.launch", "miniend_jax.plot"),           # entry points
    ("miniend_jax.modes",),                                                              # one module per mode
    ("miniend_jax.config_checks", "miniend_jax.build", "miniend_jax.inputs", "miniend_jax.workdir"),  # config -> objects
    ("miniend_jax.train", "miniend_jax.evaluation", "tasks"),                            # the loop, scoring, data
    ("miniend_jax.distill", "miniend_jax.checkpoints"),                                  # losses, weights in and out
    ("miniend_jax.models", "miniend_jax.parallel"),                                      # the networks, the mesh
    ("miniend_jax.files", "miniend_jax.errors", "miniend_jax.jsonl", "miniend_jax.console",
     "miniend_jax.config_file", "miniend_jax.rss", "configs", "miniend_jax"),             # leaves
)


def import_graph(root=ROOT) -> dict[str, set[str]]:
    """{module: the project modules it imports}, for miniend_jax, tasks and configs."""
    paths = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for package in ("miniend_jax", "tasks", "configs") for p in (root / package).rglob("*.py")}

    def owner(name):
        while name not in paths and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in paths else None

    graph = {module: set() for module in paths}
    for module, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {o for o in map(owner, names) if o and o != module}
    return graph


def layer(module: str) -> int | None:
    """The layer of `module`; None for one no layer names (a new module: place it in `LAYERS`)."""
    found = [(len(prefix), i) for i, group in enumerate(LAYERS) for prefix in group
             if module == prefix or (module.startswith(prefix + ".") and prefix != "miniend_jax")]
    return max(found)[1] if found else None


def upward(graph) -> list[str]:
    """`a -> b` for each import of a module from a layer above (or of a module in no layer)."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer(a) is None or layer(b) is None or layer(b) < layer(a))


def cycles(graph) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2
    for module in sorted(graph):
        if not state.get(module):
            visit(module)
    return found


def test_every_import_goes_down_or_across():
    graph = import_graph()
    assert len(graph) > 60 and sum(map(len, graph.values())) > 150  # the walk really read the tree
    assert upward(graph) == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("graph, problem", [
    ({"miniend_jax.models.t5": {"miniend_jax.train.loop"}, "miniend_jax.train.loop": set()}, "upward"),
    ({"miniend_jax.models.t5": {"miniend_jax.newthing"}, "miniend_jax.newthing": set()}, "upward"),
    ({"tasks.a": {"tasks.b"}, "tasks.b": {"tasks.a"}}, "cycle")])
def test_the_checks_catch_what_they_are_for(graph, problem):
    assert (upward(graph) if problem == "upward" else cycles(graph))
