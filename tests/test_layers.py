"""The layout README's "What is here" states, kept true: every import (module level or inside a function)
goes to the same layer or one below, no modules import each other in a circle, and no module outside
`models/` and a family's own checkpoint module names a model family (README, "Model families")."""

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


# Each family's own modules, and the modules outside `models/` allowed to import them (its HF module).
FAMILY_MODULES = {
    "t5": ({"miniend_jax.models.t5", "miniend_jax.models.config", "miniend_jax.models.presets"},
           {"miniend_jax.checkpoints.hf_t5"}),
    "bart": ({"miniend_jax.models.bart", "miniend_jax.models.bart_config"}, {"miniend_jax.checkpoints.hf_bart"}),
}
FAMILY_CLASSES = {"T5", "T5Config", "Bart", "BartConfig"}   # what `miniend_jax.models` re-exports of them


def family_imports(root=ROOT) -> list[str]:
    """`module -> family module` for each import (module level or inside a function) of a family's module,
    or of its classes through the package's face, from outside `models/` and that family's checkpoint
    module; over the package, the Tasks, the configs and the benchmarks."""
    owners = {module: family for family, (modules, _) in FAMILY_MODULES.items() for module in modules}
    allowed = {family: importers for family, (_, importers) in FAMILY_MODULES.items()}
    found = []
    for package in ("miniend_jax", "tasks", "configs", "bench"):
        for path in (root / package).rglob("*.py"):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            if module.startswith("miniend_jax.models"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    family = owners.get(name) or (
                        "face" if name.rsplit(".", 1) == ["miniend_jax.models", name.rsplit(".", 1)[-1]]
                        and name.rsplit(".", 1)[-1] in FAMILY_CLASSES else None)
                    if family and module not in allowed.get(family, ()):
                        found.append(f"{module} -> {name}")
    return sorted(set(found))


def test_no_module_outside_the_registry_names_a_family():
    assert family_imports() == []


def test_the_family_check_catches_a_named_family(tmp_path):
    for package in ("miniend_jax", "tasks", "configs", "bench"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "miniend_jax" / "models").mkdir()
    for name in ("__init__", "t5", "bart"):
        (tmp_path / "miniend_jax" / "models" / f"{name}.py").write_text("")
    (tmp_path / "miniend_jax" / "loop.py").write_text("from miniend_jax.models.t5 import T5\n")
    (tmp_path / "bench" / "b.py").write_text("def f():\n    from miniend_jax.models import Bart\n")
    assert family_imports(tmp_path) == ["bench.b -> miniend_jax.models.Bart",
                                        "miniend_jax.loop -> miniend_jax.models.t5"]


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
