"""The package's shape, checked: modules that fit in a head, no import cycle, no test code shipped.
(The layers themselves are import-linter's contracts in pyproject.toml, run by `make lint`.)"""

from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "shardflow"
#: STYLE.md: a module fits in your head, under about 400 lines.
MAX_LINES = 400


def test_no_module_is_longer_than_a_reader_can_hold():
    lengths = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(lengths) > 40  # the walk found the package
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_no_two_modules_import_each_other_even_through_others():
    graph = grimp.build_graph("shardflow", cache_dir=None)
    modules = sorted(m for m in graph.modules if m.startswith("shardflow"))

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for imported in graph.find_modules_directly_imported_by(stack.pop()):
                if imported.startswith("shardflow") and imported not in seen:
                    seen.add(imported)
                    stack.append(imported)
        return seen

    cycles = [m for m in modules if m in reaches(m)]
    assert cycles == []


def test_the_shipped_package_imports_no_test_code():
    graph = grimp.build_graph("shardflow", include_external_packages=True, cache_dir=None)
    shipped_imports = {
        imported.split(".")[0]
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
    }
    assert not shipped_imports & {"support", "tests", "pytest", "conftest"}
