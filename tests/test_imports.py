"""The package's import graph: a DAG, function-level imports counted, and no private names across modules."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "c2f_vol"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path):
    """(line, imported c2f_vol module, names taken from it, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "c2f_vol":
                    yield node.lineno, alias.name, [], id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "c2f_vol":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                # `from c2f_vol.data import pipeline` imports a module; `from c2f_vol.codec import X` a name.
                target, names = (sub, []) if sub in MODULES else (node.module, [alias.name])
                yield node.lineno, target, names, id(node) in top


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, target, _, _ in _imports(path):
            assert target in MODULES, f"{path}: imports {target}, which is not a module of the package"
            if target != name:
                graph[name].add(target)
    return graph


def _find_cycle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_finder_sees_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_import_graph_is_acyclic_with_function_level_imports_counted():
    graph = _graph()
    assert sum(map(len, graph.values())) > 30, "the walk found too few imports to be reading the package"
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_stay_apart():
    """Evaluation never reaches training, and inference reaches neither training nor TensorFlow-side modules."""
    graph = _graph()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert "c2f_vol.train" not in reach("c2f_vol.evaluation")
    assert not {"c2f_vol.train", "c2f_vol.export", "c2f_vol.data.pipeline"} & reach("c2f_vol.inference")
    assert not {"c2f_vol.train", "c2f_vol.evaluation"} & reach("c2f_vol.export")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_function_level_imports_say_why(name):
    """A c2f_vol import inside a function is allowed only to keep TensorFlow off a TF-free path, and says so."""
    path = MODULES[name]
    lines = path.read_text().splitlines()
    for lineno, target, _, at_top in _imports(path):
        if at_top:
            continue
        context = " ".join(lines[max(lineno - 2, 0):lineno])
        assert "TensorFlow" in context, (f"{path}:{lineno}: function-level import of {target} without a comment "
                                         "saying it keeps TensorFlow off a TF-free path; import it at the top")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_across_modules(name):
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}
    for lineno, target, names, _ in _imports(path):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{path}:{lineno}: imports private {private} from {target}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("c2f_vol"):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_")):
            raise AssertionError(f"{path}:{node.lineno}: uses private {aliases[node.value.id]}.{node.attr}")
