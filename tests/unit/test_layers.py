"""The layer rules of docs/architecture.md, read from every module's imports with `ast`: no
layer breach, no import cycle, no import of another module's private name. Imports inside
functions and under TYPE_CHECKING count too: they are still the module's dependencies."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("execution_service", "brokers")

# first match wins: (layer, module-name prefixes)
LAYERS = (
    # redaction and credentials: leaf helpers every layer that reads a secret needs
    ("core", ("execution_service.errors", "execution_service.clock", "execution_service.redaction",
              "execution_service.credentials")),
    ("domain", ("execution_service.domain",)),
    ("ports", ("execution_service.service.ports", "brokers.base")),
    ("service", ("execution_service.service",)),
    ("adapters", ("execution_service.adapters",)),
    ("settings", ("execution_service.config",)),
    ("brokers", ("brokers",)),
    # the operators' edge: click commands that call bootstrap; nothing imports them
    ("cli", ("execution_service.cli", "execution_service.__main__")),
    ("wiring", ("execution_service",)),  # bootstrap, account_setup, run, status
)
PACKAGE_ROOTS = {"execution_service": "core", "brokers": "brokers"}  # __version__, docstrings
# which layers each layer may import (inside the project)
MAY_IMPORT = {
    "core": {"core"},
    "domain": {"domain"},
    "ports": {"ports", "domain", "core"},
    "service": {"service", "ports", "domain", "core"},
    "adapters": {"adapters", "ports", "domain", "core"},
    "settings": {"domain", "core"},
    "brokers": {"brokers", "ports", "domain", "core"},
    "wiring": {"wiring", "settings", "adapters", "brokers", "service", "ports", "domain", "core"},
    "cli": {"cli", "wiring", "settings", "adapters", "brokers", "service", "ports", "domain",
            "core"},
}
PURE = {"__future__", "abc", "collections", "dataclasses", "datetime", "decimal", "enum",
        "functools", "hashlib", "itertools", "json", "math", "re", "string", "typing",
        "unicodedata", "pydantic", "pydantic_core", "secrets", "base64", "hmac"}
CLIENT_LIBRARIES = {"pymongo", "bson", "litemongo", "google", "grpc", "telegram", "kiteconnect",
                    "ib_async", "requests", "urllib3", "httpx", "prometheus_client", "click"}
# the outside libraries each layer may use: None is any; a set is an allowlist; a
# ("not", set) a denylist
OUTSIDE = {
    "core": ("not", CLIENT_LIBRARIES | {"pydantic", "pydantic_settings"}),
    "domain": PURE,
    "ports": ("not", CLIENT_LIBRARIES),
    "service": ("not", CLIENT_LIBRARIES),
    "adapters": ("not", {"ib_async", "kiteconnect", "click"}),
    "settings": ("not", CLIENT_LIBRARIES),
    "brokers": ("not", {"pymongo", "bson", "litemongo", "google", "grpc", "telegram",
                        "prometheus_client", "click"}),
    "wiring": None,
    "cli": None,
}
# run as scripts, not layered: no cycle and no private name there either; a module imports its
# siblings by bare name (the directory is on sys.path)
SCRIPT_DIRS = ("benchmarks", "scripts")


@dataclass(frozen=True)
class Import:
    importer: str
    module: str  # the project module (or outside top-level package) imported
    name: str | None  # the name taken from it, for `from module import name`
    line: int


def layer_of(module: str) -> str:
    if module in PACKAGE_ROOTS:
        return PACKAGE_ROOTS[module]
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    raise AssertionError(f"{module} is in no layer")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import, and every `module._name` read through a module an import bound."""
    found = []
    bound: dict[str, str] = {}  # local name -> the project module it is bound to
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = sibling(name, alias.name, known)
                found.append(Import(name, module, None, node.lineno))
                if module in known:
                    bound[alias.asname or alias.name.split(".")[0]] = (
                        module if alias.asname or "." not in alias.name
                        else module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            base = sibling(name, base, known)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:  # `from package import module`
                    found.append(Import(name, submodule, None, node.lineno))
                    bound[alias.asname or alias.name] = submodule
                else:
                    found.append(Import(name, base, alias.name, node.lineno))
    return found + reads_through_modules(name, source, bound)


def reads_through_modules(name: str, source: str, bound: dict[str, str]) -> list[Import]:
    """`alias.attribute` where an import bound `alias` to a project module: a name taken."""
    return [Import(name, bound[node.value.id], node.attr, node.lineno)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in bound]


def sibling(importer: str, module: str, known: set[str]) -> str:
    """`module` as the project names it: in a script directory a bare name may be a sibling."""
    top = importer.split(".")[0]
    if top in SCRIPT_DIRS and f"{top}.{module.split('.')[0]}" in known:
        return f"{top}.{module}"
    return module


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES
                    ) -> dict[str, tuple[str, bool]]:
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = (path.read_text(), path.name == "__init__.py")
    return modules


def all_imports(modules: dict[str, tuple[str, bool]]) -> list[Import]:
    known = set(modules)
    return [found for name, (source, is_package) in modules.items()
            for found in imports_of(name, source, is_package, known)]


def is_project(module: str) -> bool:
    return module.split(".")[0] in (*PACKAGES, *SCRIPT_DIRS)


def breaches(imports: list[Import]) -> list[str]:
    problems = []
    for found in imports:
        layer = layer_of(found.importer)
        if is_project(found.module):
            target = layer_of(found.module)
            if target not in MAY_IMPORT[layer]:
                problems.append(f"{found.importer}:{found.line} ({layer}) imports "
                                f"{found.module} ({target})")
            continue
        top = found.module.split(".")[0]
        rule = OUTSIDE[layer]
        allowed = rule is None or (top not in rule[1] if isinstance(rule, tuple)
                                   else top in rule)
        if not allowed:
            problems.append(f"{found.importer}:{found.line} ({layer}) imports {top}")
    return problems


def private_imports(imports: list[Import]) -> list[str]:
    return [f"{found.importer}:{found.line} takes {found.name} from {found.module}"
            for found in imports
            if is_project(found.module) and found.module != found.importer and found.name
            and found.name.startswith("_") and not found.name.startswith("__")]


def cycles(imports: list[Import]) -> list[list[str]]:  # noqa: C901 (Tarjan, kept whole)
    """Strongly connected groups of more than one module (or a module importing itself)."""
    graph: dict[str, set[str]] = {}
    for found in imports:
        if is_project(found.module):
            graph.setdefault(found.importer, set()).add(found.module)
            graph.setdefault(found.module, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports(project_modules())


def test_given_every_module_then_no_import_crosses_a_layer_boundary(imports):
    assert breaches(imports) == []


@pytest.fixture(scope="module")
def with_scripts() -> list[Import]:
    return all_imports(project_modules(packages=(*PACKAGES, *SCRIPT_DIRS)))


def test_given_every_module_and_script_then_no_import_cycle(with_scripts):
    assert cycles(with_scripts) == []


def test_given_every_module_and_script_then_none_takes_another_modules_private_name(
        with_scripts):
    """Neither by `from module import _name` nor by reading `module._name`."""
    assert private_imports(with_scripts) == []


def test_given_the_scripts_then_their_imports_of_siblings_are_read_as_project_modules(
        with_scripts):
    """Given the benchmarks and scripts (siblings imported by bare name), then those imports
    are edges to the sibling modules, so a cycle or a private name among them is seen."""
    edges = {(found.importer, found.module) for found in with_scripts}
    assert ("benchmarks.core_ops", "benchmarks.counting_daemon") in edges
    assert ("scripts.start", "scripts._common") in edges


def test_given_the_layers_then_every_module_has_one_and_the_wiring_is_where_it_should_be():
    """Given the layer table, then bootstrap and the CLI are wiring, the broker port and the
    service ports are ports, and concrete brokers are broker adapters."""
    modules = project_modules()
    assert {"execution_service.bootstrap", "execution_service.domain.orders",
            "brokers.mock", "execution_service.service.ports"} <= set(modules)
    assert layer_of("execution_service.bootstrap") == "wiring"
    assert {"execution_service.cli", "execution_service.cli.common"} <= set(modules)
    assert layer_of("execution_service.cli.app") == "cli" == layer_of("execution_service.cli")
    assert layer_of("execution_service.__main__") == "cli"
    assert layer_of("brokers.base") == "ports" and layer_of("brokers.zerodha") == "brokers"
    assert all(layer_of(name) for name in modules)


# the checker itself: it must catch what it is for ---------------------------------------------

FAKE = {
    "execution_service.domain.leaky": ("import pymongo\nfrom execution_service.adapters.store "
                                       "import Store\n", False),
    "execution_service.service.uses_adapter": (
        "from execution_service.adapters.store import _private\n", False),
    "execution_service.cli_a": ("from execution_service import cli_b\n", False),
    "execution_service.cli_b": ("def later():\n    from execution_service.cli_a import x\n",
                                False),
    "brokers.reaches_up": ("from execution_service.config import Settings\n", False),
    "execution_service.wires_the_cli": ("from execution_service.cli import common\n", False),
    "execution_service.cli.common": ("from execution_service.bootstrap import open_app_store\n",
                                     False),
    "execution_service.adapters.store": ("", False),
    "execution_service.config": ("", False),
    "benchmarks.bench_a": ("import bench_b\nfrom execution_service.service import positions\n"
                           "positions._fields = None\nbench_b._install()\n", False),
    "benchmarks.bench_b": ("from bench_a import run\n", False),
    "execution_service.service.positions": ("", False),
}


def test_given_a_domain_module_importing_an_adapter_and_a_driver_then_both_are_breaches():
    """Given also a service module on an adapter, a broker on the settings and a wiring module
    on the CLI (the outer edge), then each is a breach; the CLI on bootstrap is not."""
    layered = {name: module for name, module in FAKE.items() if name.split(".")[0] in PACKAGES}
    problems = breaches(all_imports(layered))
    assert any("domain.leaky" in p and "pymongo" in p for p in problems)
    assert any("domain.leaky" in p and "adapters.store (adapters)" in p for p in problems)
    assert any("service.uses_adapter" in p for p in problems)
    assert any("brokers.reaches_up" in p and "(settings)" in p for p in problems)
    assert any("wires_the_cli" in p and "cli.common (cli)" in p for p in problems)
    assert not any(p.startswith("execution_service.cli.common") for p in problems)


def test_given_two_modules_importing_each_other_even_lazily_then_a_cycle():
    """... also two scripts importing each other by bare name."""
    assert cycles(all_imports(FAKE)) == [["benchmarks.bench_a", "benchmarks.bench_b"],
                                         ["execution_service.cli_a", "execution_service.cli_b"]]


def test_given_an_underscore_name_imported_or_read_off_a_module_then_it_is_reported():
    assert sorted(private_imports(all_imports(FAKE))) == [
        "benchmarks.bench_a:3 takes _fields from execution_service.service.positions",
        "benchmarks.bench_a:4 takes _install from benchmarks.bench_b",
        "execution_service.service.uses_adapter:1 takes _private from "
        "execution_service.adapters.store"]
