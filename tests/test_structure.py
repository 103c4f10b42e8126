"""The package's layout rules, read from the source with `ast` (nothing imported): imports run one way (no
circle, counting imports inside functions), no private name is imported from another module, fpga/ holds only
sub-packages, and no function or file outgrows its limit."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "jetdeploy"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 400


def _modules() -> dict:
    """module name -> (path, is_package)."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _base(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
    pkg = pkg[: len(pkg) - (node.level - 1)]
    return ".".join(pkg + ([node.module] if node.module else []))


def _imports(mods: dict):
    """(module -> the jetdeploy modules it imports, [(module, source, private name)])."""
    edges, private = {}, []
    for mod, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = _base(mod, is_pkg, node)
                if base.split(".")[0] != "jetdeploy":
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in mods else base)
                    if full not in mods and alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((mod, base, alias.name))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "jetdeploy")
        edges[mod] = {d for d in deps if d in mods and d != mod}
    return edges, private


def _cycles(edges: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root), on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w), on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    edges, _ = _imports(_modules())
    assert "jetdeploy.fpga.rtl.stage" in edges and edges["jetdeploy.fpga.rtl.stage"], "the import graph is empty"
    assert _cycles(edges) == []


def test_no_private_name_across_modules():
    _, private = _imports(_modules())
    assert private == []


def test_fpga_holds_only_subpackages():
    loose = sorted(p.name for p in (PKG / "fpga").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    for sub in (PKG / "fpga").iterdir():
        if sub.is_dir() and sub.name != "__pycache__":
            assert (sub / "__init__.py").exists(), sub


@pytest.mark.parametrize("kind", ["function", "file"])
def test_sizes(kind):
    over = []
    for path, _ in _modules().values():
        text = path.read_text()
        if kind == "file":
            n = len(text.splitlines())
            over += [(str(path.relative_to(SRC)), n)] if n > MAX_FILE_LINES else []
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    over.append((f"{path.relative_to(SRC)}:{node.name}", n))
    assert over == []


def _calls_of(name: str):
    """(file, line, ast.Call) of every call to `name` (a bare name or an attribute) in the package."""
    for path, _ in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                    yield path.relative_to(SRC), node.lineno, node


def test_no_check_is_built_passing_and_every_check_has_a_threshold():
    calls = list(_calls_of("Check"))
    assert len(calls) >= 5, "the Check constructions were not found"
    literal = [(str(p), n) for p, n, c in calls
               if (len(c.args) > 1 and isinstance(c.args[1], ast.Constant) and c.args[1].value is True)
               or any(k.arg == "ok" and isinstance(k.value, ast.Constant) and k.value.value is True for k in c.keywords)]
    assert literal == []
    no_threshold = [(str(p), n) for p, n, c in calls
                    if len(c.args) < 6 and not any(k.arg == "threshold" for k in c.keywords)]
    assert no_threshold == []


def test_no_stage_records_a_literal_ok_true():
    found = []
    for path, _ in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == "ok" and isinstance(v, ast.Constant) and v.value is True:
                        found.append((str(path.relative_to(SRC)), node.lineno))
    assert found == []


def test_all_ok_needs_a_required_check():
    from jetdeploy.checks import Check, all_ok, unchecked

    passing, failing = Check("a", True, "t", "m", 1.0, 1.0), Check("b", False, "t", "m", 0.0, 1.0)
    alternative = Check("c", False, "t", "m", 0.5, 0.95, required=False)
    assert all_ok([]) is False and all_ok([alternative]) is False
    assert all_ok([passing]) and all_ok([passing, alternative]) and all_ok([passing.as_dict(), alternative.as_dict()])
    assert not all_ok([passing, failing]) and not all_ok([failing.as_dict()])
    assert alternative.as_dict()["required"] is False and passing.as_dict()["required"] is True
    assert unchecked("why") == {"ok": None, "ok_reason": "why"}
