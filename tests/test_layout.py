"""The package's rooms and their arrows (docs/ARCHITECTURE.md): imports point
down only, the installed package never reaches into benchmarks/, and
``import pushcore`` stays light."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pushcore

PACKAGE = Path(pushcore.__file__).resolve().parent

# Higher layers may import lower ones, never the reverse (a room may import
# itself). The compiled modules (_frame, _pool, _loop) are the bottom.
LAYER = {
    "wire": 0, "version": 0, "errors": 0.5,
    "_frame": 1, "_pool": 1, "_loop": 1, "native": 1,
    "codec": 2, "loop": 2, "store": 2, "tokens": 2,
    "gateway": 3, "device": 3, "bench": 3,
    "cluster": 3.5,  # over the gateway: the worker supervisor, routing between gateways
    "sim": 4, "admin": 4,
    "cli": 5,
    "__init__": 6, "__main__": 7,
}
LIGHT = {"wire", "version", "errors", "native", "codec", "loop", "store", "tokens", "gateway", "device",
         "_frame", "_pool", "_loop"}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    module = ".".join(rel if rel[-1] != "__init__" else rel[:-1])
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import x: the modules x
                found += [f"{target}.{alias.name}" for alias in node.names]
            else:
                found.append(target)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def python_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer():
    rooms = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in python_modules()}
    assert rooms <= set(LAYER), f"rooms without a layer in this test: {rooms - set(LAYER)}"


def test_imports_point_down_only():
    wrong = []
    for path in python_modules():
        here = room("pushcore." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for target in imports_of(path):
            if not target.startswith("pushcore"):
                continue
            there = room(target)
            if there == "__init__" and target != "pushcore":
                there = target.split(".")[1]
            if there == here:
                continue
            if LAYER.get(there, -1) >= LAYER[here]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_package_never_imports_benchmarks():
    """No import of benchmarks/, and no path built to reach it from the package
    (``Path(__file__).parent.parent / "benchmarks"``): mentions in docs are fine."""
    offenders = []
    for path in python_modules():
        if any(t.split(".")[0] == "benchmarks" for t in imports_of(path)):
            offenders.append(f"{path.relative_to(PACKAGE)} imports benchmarks")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.right, ast.Constant) \
                    and node.right.value == "benchmarks":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} builds a path to benchmarks/")
    assert not offenders


def test_import_pushcore_is_light():
    code = ("import sys, pushcore; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('pushcore.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = {m.split(".")[1] for m in done.stdout.split()}
    assert loaded <= LIGHT, f"import pushcore loaded {loaded - LIGHT}"
    assert {"gateway", "device", "codec", "loop"} <= loaded
    assert "annotations" not in dir(pushcore)


def test_lazy_names_resolve_and_are_listed():
    for name in ("Loop", "Simulator", "Profile", "AdminAPI"):
        assert name in pushcore.__all__ and name in dir(pushcore)
        assert getattr(pushcore, name).__name__ == name
    for name in pushcore.__all__:
        assert hasattr(pushcore, name), name


def test_cli_help_does_not_import_the_comparison_formats():
    code = ("import sys, contextlib, io\n"
            "from pushcore.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['--help'])\n"
            "    except SystemExit: pass\n"
            "print(' '.join(m for m in sys.modules if m.startswith('pushcore.bench.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pushcore.bench.options"]
