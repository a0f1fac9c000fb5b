"""The shape of the package: the method protocol, one registry per kind of thing, the task kind
as the only place kinds differ, and no import circle."""

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from retain.catalogue import HEADS, METHODS, MethodInfo
from retain.kinds import CLASSIFICATION, KINDS
from retain.methods import REGISTRY, base
from retain.methods.base import HOOKS, ContinualMethod, MethodConfig, register

SRC = Path(__file__).resolve().parents[1] / "src" / "retain"


def test_the_protocol_has_at_most_15_points_each_documented():
    assert len(HOOKS) <= 15
    doc = base.__doc__
    for hook in HOOKS:
        assert f"``{hook}``" in doc, f"{hook} is not documented in retain.methods.base"
        assert hasattr(ContinualMethod, hook)
    # what the shipped methods override is in the protocol and nothing else
    for cls in REGISTRY.values():
        for klass in cls.__mro__[:cls.__mro__.index(ContinualMethod)]:
            for attr, value in vars(klass).items():
                if callable(value) and not attr.startswith("_") and hasattr(ContinualMethod,
                                                                                attr):
                    assert attr in HOOKS or attr == "train", f"{cls.name} overrides {attr}"


@pytest.mark.parametrize("attr, message", [
    ("predcit", "misspelt hook"), ("end_tasks", "misspelt hook"),
    ("wrap", "not part of the method protocol"), ("default_lr", "not part of"),
    ("training_tasks", "not part of")])
def test_a_misspelt_or_retired_hook_is_refused_when_the_class_is_defined(attr, message):
    with pytest.raises(TypeError, match=message):
        type("Bad", (ContinualMethod,), {attr: lambda self: None})


def test_an_option_without_help_is_refused_when_the_class_is_defined():
    @dataclass
    class NoHelp(MethodConfig):
        width: int = 3

    with pytest.raises(TypeError, match="needs metadata"):
        type("Bad", (ContinualMethod,), {"config_class": NoHelp})


@dataclass
class ToyOptions(MethodConfig):
    layer: int = field(default=-1, metadata={"help": "the encoder layer whose biases train"})


class Toy(ContinualMethod):
    """Trains the biases of one encoder layer's output: a method in one class."""

    name = "toy-biases"
    config_class = ToyOptions

    def prepare(self, backbone, stream) -> None:
        self.model.requires_grad_(False)
        for p in self.model.encoder.layer[self.config.layer].parameters():
            p.requires_grad_(p.ndim == 1)

    def model_tensors(self):
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}


def test_a_method_registered_in_one_call_appears_everywhere(tiny_config, capsys):
    from retain.cli import main
    from retain.comparison import method_names
    from tests.test_engine import check_method_runs

    register(Toy, info=MethodInfo("", "toy: one layer's biases", "growing",
                                  (CLASSIFICATION.name,), "a toy"))
    try:
        assert METHODS["toy-biases"].module == __name__
        assert main(["list"]) == 0
        assert "toy-biases" in capsys.readouterr().out
        assert "toy-biases" in method_names("all", CLASSIFICATION.name)
        assert "toy-biases" in sorted(REGISTRY)  # what the every-method test runs over
        check_method_runs(tiny_config(method="toy-biases"), "toy-biases")
    finally:
        METHODS.pop("toy-biases", None)
        REGISTRY.pop("toy-biases", None)


def test_one_registry_per_kind_of_thing():
    from retain.config import HEADS as CONFIG_HEADS
    from retain.data import BENCHMARKS
    from retain.methods.heads import REGISTRY as HEAD_REGISTRY

    assert set(REGISTRY) == set(METHODS)
    assert tuple(CONFIG_HEADS) == tuple(HEADS) == tuple(n for n in HEAD_REGISTRY if n != "none")
    for name, info in METHODS.items():
        assert REGISTRY[name].info is info and set(info.kinds) <= set(KINDS)
    for bench in BENCHMARKS.values():
        assert KINDS[bench.kind.name] is bench.kind


def _kind_literals(tree: ast.AST) -> list[int]:
    names = {k for k in KINDS} | {"lm", "classification"}

    def literal(node) -> bool:
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(
            literal(e) for e in node.elts)
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Compare)
            and any(literal(c) for c in [n.left, *n.comparators])]


def test_no_comparison_of_a_kind_name_outside_kinds():
    found = {str(p.relative_to(SRC)): lines for p in SRC.rglob("*.py")
             if p.name != "kinds.py" and (lines := _kind_literals(ast.parse(p.read_text())))}
    assert found == {}
    bad = ast.parse('if kind == "lm":\n    pass\nok = x in ("classification",)')
    assert _kind_literals(bad) == [1, 3]  # the check itself finds them


# where a kind arrives as a name and becomes the object: the command line and config
# (config.py, cli.py's listing), and what is read back from JSON (a stream's outline, a
# checkpoint's state and its saved plan (Plan.saved), results and comparisons)
NAME_EDGES = {"kinds.py", "config.py", "cli.py", "data/stream.py", "checks.py",
              "reporting/__init__.py", "frontier.py"}


def _kind_by_name(tree: ast.AST) -> list[int]:
    """Lines that switch on a kind's boolean (``has_classes``) or look a kind up by name
    (``get_kind(...)``, ``KINDS[...]``, ``KINDS.get(...)``)."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and n.attr == "has_classes":
            out.append(n.lineno)
        elif isinstance(n, ast.Call) and ast.unparse(n.func) in ("get_kind", "KINDS.get"):
            out.append(n.lineno)
        elif isinstance(n, ast.Subscript) and ast.unparse(n.value) == "KINDS":
            out.append(n.lineno)
    return out


def test_no_kind_boolean_and_no_kind_looked_up_by_name_inside():
    """The kind is asked for named behaviour, never a boolean (``has_classes`` is gone), and
    looked up by name only at the edges where it arrives as a name."""
    found = {name: lines for p in SRC.rglob("*.py")
             if (name := str(p.relative_to(SRC))) not in NAME_EDGES
             and (lines := _kind_by_name(ast.parse(p.read_text())))}
    assert found == {}
    everywhere = {name: lines for p in SRC.rglob("*.py")
                  if (lines := [n.lineno for n in ast.walk(ast.parse(p.read_text()))
                                if isinstance(n, ast.Attribute) and n.attr == "has_classes"])
                  and (name := str(p.relative_to(SRC)))}
    assert everywhere == {}
    bad = ast.parse("a = kind.has_classes\nb = get_kind(x)\nc = KINDS[x]\nd = KINDS.get(x)")
    assert _kind_by_name(bad) == [1, 2, 3, 4]  # the check itself finds them


def _imports(path: Path) -> set[str]:
    """Modules of retain this file imports when it is imported (not inside functions, not
    under TYPE_CHECKING)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ([node] if isinstance(node, ast.Import | ast.ImportFrom) else []):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else [
                f"{n.module}.{a.name}" for a in n.names] + [n.module or ""]
            for name in names:
                while name.startswith("retain") and name not in MODULES:
                    name = name.rpartition(".")[0]
                if name in MODULES:
                    out.add(name)
    return out


MODULES = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
           for p in SRC.rglob("*.py")}


def test_no_import_circle():
    graph = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(
        ".__init__"): _imports(p) for p in SRC.rglob("*.py")}
    for module in graph:  # a module's own package is not an edge back to it
        graph[module] = {m for m in graph[module]
                         if m != module and not module.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import circle: " + " -> ".join(
                path[path.index(n):] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert {"retain.loop", "retain.config"} <= graph["retain.engine"]  # edges are seen


def _backslashes(text: str) -> list[int]:
    """Lines continued by a backslash: a token on a later line than the one before it with no
    line break between them (inside brackets a break is an NL token; after a backslash there is
    none)."""
    import io
    import tokenize

    out, last, broken = [], None, True
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        if t.type in (tokenize.NL, tokenize.NEWLINE):
            broken = True
        elif t.type not in (tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
            if last is not None and not broken and t.start[0] > last.end[0]:
                out.append(last.end[0])
            last, broken = t, False
    return out


def test_rooms_stay_small_and_statements_need_no_backslash():
    """No source file over 450 lines, no function over 60, no backslash continuation."""
    big, long, slashes = {}, {}, {}
    for p in SRC.rglob("*.py"):
        name, text = str(p.relative_to(SRC)), p.read_text()
        if len(text.splitlines()) > 450:
            big[name] = len(text.splitlines())
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    n.end_lineno - n.lineno + 1 > 60):
                long[f"{name}:{n.name}"] = n.end_lineno - n.lineno + 1
        if found := _backslashes(text):
            slashes[name] = found
    assert (big, long, slashes) == ({}, {}, {})
    assert _backslashes("x = 1 + \\\n    2\ny = (1 +\n     2)\n") == [1]  # it finds them
