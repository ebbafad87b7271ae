"""The .pyi stubs beside the compiled extensions can never drift from them.

For each of ``pushcore._frame``, ``pushcore._pool`` and ``pushcore._loop``
the compiled module is imported and its stub ``pushcore/<name>.pyi`` is
parsed with :mod:`ast`; then:

* every public name of the module (``dir()`` without a leading underscore,
  leaving out imported modules and objects defined elsewhere, such as
  ``pushcore.errors.ProtocolError``) is declared in the stub, and every
  name the stub declares exists in the module (typing-only helpers — type
  aliases, ``TypeVar``\\ s, ``Protocol`` classes — excepted);
* every public member of every class is declared in the stub's class (or a
  base the stub declares), and every member the stub declares exists;
* a class's bases are the stub's bases;
* each function's and method's parameters (names, kinds, defaults) match the
  runtime signature where Python can tell it (Cython functions are
  introspectable; a class's constructor signature is the first line of its
  docstring, from ``embedsignature``); a constructor that cannot be
  introspected (``__cinit__``) is called with the stub's keyword defaults;
* constants written ``NAME: Final = <literal>`` and class attributes typed
  ``ClassVar[Literal[<n>]]`` have those values; a stub ``__all__`` is the
  module's.

A failure means the stub (or ext/) changed without the other: update the stub.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MethodWrapperType, ModuleType, WrapperDescriptorType
from typing import Any

import pytest

EXTENSIONS = ["_frame", "_pool", "_loop"]

# the typing constructs a stub may define that need not exist at runtime
_TYPE_ONLY_CALLS = {"TypeVar", "TypeVarTuple", "ParamSpec", "NewType"}
_TYPE_ONLY_BASES = {"Protocol", "TypedDict"}
_NO_RUNTIME_BASES = {"object", "Protocol", "Generic"}
_NOTHING = object()
_C_TYPES = (r"\b(?:(?:const|unsigned|signed|long|short|char|int|bint|double|float|size_t|Py_ssize_t|"
            r"u?int(?:8|16|32|64)_t|object|str|bytes|tuple|list|dict)\s+)+(?=[A-Za-z_*])")


@dataclass
class StubFunction:
    name: str
    defs: list[ast.FunctionDef] = field(default_factory=list)

    @property
    def overloaded(self) -> bool:
        return len(self.defs) > 1 or any(_decorator_names(d) & {"overload"} for d in self.defs)


@dataclass
class StubClass:
    name: str
    bases: list[str]
    members: dict[str, ast.AST] = field(default_factory=dict)
    functions: dict[str, StubFunction] = field(default_factory=dict)
    literals: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stub:
    path: Path
    declared: dict[str, ast.AST] = field(default_factory=dict)   # names that must exist at runtime
    type_only: set[str] = field(default_factory=set)
    classes: dict[str, StubClass] = field(default_factory=dict)
    functions: dict[str, StubFunction] = field(default_factory=dict)
    literals: dict[str, Any] = field(default_factory=dict)       # NAME: Final = <literal>
    all: list[str] | None = None

    def class_members(self, name: str) -> set[str]:
        """Members of stub class *name*, with those of its bases declared in the stub."""
        cls = self.classes[name]
        members = set(cls.members)
        for base in cls.bases:
            if base in self.classes:
                members |= self.class_members(base)
        return members


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _name_of(node.value)
    if isinstance(node, ast.Call):
        return _name_of(node.func)
    return ""


def _decorator_names(node: ast.FunctionDef) -> set[str]:
    return {_name_of(d) for d in node.decorator_list}


def _literal(node: ast.expr | None) -> Any:
    """The value of a literal expression, or _NOTHING."""
    if node is None:
        return _NOTHING
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NOTHING


def _annotation_literal(node: ast.expr) -> Any:
    """*n* from ``Literal[n]`` or ``ClassVar[Literal[n]]``, else _NOTHING."""
    if isinstance(node, ast.Subscript):
        name = _name_of(node.value)
        if name == "Literal":
            return _literal(node.slice)
        if name in ("ClassVar", "Final"):
            return _annotation_literal(node.slice)
    return _NOTHING


def _add_function(table: dict[str, StubFunction], node: ast.FunctionDef) -> None:
    table.setdefault(node.name, StubFunction(node.name)).defs.append(node)


def parse_stub(path: Path) -> Stub:
    stub = Stub(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = [_name_of(b) for b in node.bases]
            if set(bases) & _TYPE_ONLY_BASES:
                stub.type_only.add(node.name)
                continue
            cls = StubClass(node.name, bases)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    cls.members[item.name] = item
                    _add_function(cls.functions, item)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    cls.members[item.target.id] = item
                    value = _annotation_literal(item.annotation)
                    if value is _NOTHING and _name_of(item.annotation) == "Final":
                        value = _literal(item.value)
                    if value is not _NOTHING:
                        cls.literals[item.target.id] = value
                elif isinstance(item, ast.Assign):
                    for target in item.targets:
                        if isinstance(target, ast.Name):
                            cls.members[target.id] = item
            stub.classes[node.name] = cls
            stub.declared[node.name] = node
        elif isinstance(node, ast.FunctionDef):
            stub.declared[node.name] = node
            _add_function(stub.functions, node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if _name_of(node.annotation) == "TypeAlias":
                stub.type_only.add(name)
                continue
            stub.declared[name] = node
            if _name_of(node.annotation) == "Final":
                value = _literal(node.value)
                if value is not _NOTHING:
                    stub.literals[name] = value
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if not isinstance(target, ast.Name):
                    continue
                if target.id == "__all__":
                    stub.all = list(ast.literal_eval(node.value))
                elif isinstance(node.value, ast.Call) and _name_of(node.value) in _TYPE_ONLY_CALLS:
                    stub.type_only.add(target.id)
                else:
                    stub.declared[target.id] = node
        elif isinstance(node, ast.ImportFrom):
            # only the explicit re-export form declares a name (PEP 484)
            for alias in node.names:
                if alias.asname is not None and alias.asname == alias.name:
                    stub.declared[alias.name] = node
    return stub


def _is_foreign(module: ModuleType, obj: object) -> bool:
    """An imported module, or a class/function defined in another module."""
    if isinstance(obj, ModuleType):
        return True
    if isinstance(obj, type) or callable(obj):
        return getattr(obj, "__module__", module.__name__) != module.__name__
    return False


def runtime_public_names(module: ModuleType) -> set[str]:
    return {name for name in dir(module)
            if not name.startswith("_") and not _is_foreign(module, getattr(module, name))}


def runtime_public_members(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


# ---------------------------------------------------------------------------
# signatures

def _stub_params(node: ast.FunctionDef) -> list[tuple[str, str, Any]]:
    """``(name, kind, default)`` of each parameter; default is _NOTHING when
    there is none and Ellipsis when the stub writes ``...``."""
    args = node.args
    out: list[tuple[str, str, Any]] = []
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults)):
        kind = "POSITIONAL_ONLY" if index < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, _default_value(default)))
    if args.vararg is not None:
        out.append((args.vararg.arg, "VAR_POSITIONAL", _NOTHING))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", _default_value(kw_default)))
    if args.kwarg is not None:
        out.append((args.kwarg.arg, "VAR_KEYWORD", _NOTHING))
    return out


def _default_value(node: ast.expr | None) -> Any:
    if node is None:
        return _NOTHING
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return Ellipsis
    value = _literal(node)
    return Ellipsis if value is _NOTHING else value   # not a literal: not compared


def _runtime_params(sig: inspect.Signature) -> list[tuple[str, str, Any]]:
    return [(p.name, p.kind.name, _NOTHING if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()]


def _doc_signature(cls: type, module: ModuleType) -> inspect.Signature | None:
    """The constructor signature Cython's ``embedsignature`` put on the first
    line of the class docstring (``Push(seq=0, ...)``), with names in defaults
    resolved in *module*; None when there is none."""
    first = (cls.__doc__ or "").split("\n", 1)[0].strip()
    if not first.startswith(f"{cls.__name__}(") or not first.endswith(")"):
        return None
    params = first[len(cls.__name__) + 1:-1]
    try:
        tree = ast.parse(f"def _({params}): pass")
    except SyntaxError:
        # C-typed parameters ("int port", "double when"): drop the C types
        params = re.sub(r"\bnot None\b", "", params)
        params = re.sub(_C_TYPES, "", params)
        tree = ast.parse(f"def _({params}): pass")
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    namespace = {name: getattr(module, name) for name in dir(module)}
    source = ast.unparse(func)
    exec(compile(source, f"<{cls.__name__} docstring>", "exec"), namespace)
    sig = inspect.signature(namespace["_"])
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sig.replace(parameters=[self_param, *sig.parameters.values()])


def _runtime_signature(owner: ModuleType | type, name: str, module: ModuleType) -> inspect.Signature | None:
    """The runtime signature of *owner*.*name* when Python can tell it.

    Slot wrappers (``__eq__`` of a cdef class, ...) have only the generic
    ``(self, value, /)``: not compared.
    """
    if isinstance(owner, type):
        obj = inspect.getattr_static(owner, name)
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        if name == "__init__":
            # a cdef class's __init__ is a slot wrapper; its signature is in the class doc
            return _doc_signature(owner, module)
    else:
        obj = getattr(owner, name)
    if isinstance(obj, WrapperDescriptorType | MethodWrapperType):
        return None
    try:
        return inspect.signature(obj)
    except (ValueError, TypeError):
        return None


def _compare_params(where: str, stub: list[tuple[str, str, Any]], runtime: list[tuple[str, str, Any]],
                    *, defaults: bool = True) -> list[str]:
    problems: list[str] = []
    stub_shape = [(name, kind, default is not _NOTHING) for name, kind, default in stub]
    runtime_shape = [(name, kind, default is not _NOTHING) for name, kind, default in runtime]
    if stub_shape != runtime_shape:
        return [f"{where}: stub parameters {stub_shape} != runtime {runtime_shape}"]
    if not defaults:
        return problems
    for (name, _, stub_default), (_, _, runtime_default) in zip(stub, runtime):
        if stub_default in (_NOTHING, Ellipsis):
            continue
        if stub_default != runtime_default or type(stub_default) is not type(runtime_default):
            problems.append(f"{where}: default of {name} is {runtime_default!r} at runtime, "
                            f"{stub_default!r} in the stub")
    return problems


def _compare_instance_defaults(where: str, cls: Any, stub: list[tuple[str, str, Any]]) -> list[str]:
    """A class built without arguments has the stub's defaults as its attributes
    (frames store every constructor argument as the attribute of that name)."""
    instance = cls()
    problems = []
    for name, _, default in stub[1:]:
        if default in (_NOTHING, Ellipsis) or not hasattr(instance, name):
            continue
        actual = getattr(instance, name)
        if actual != default or type(actual) is not type(default):
            problems.append(f"{where}: {type(instance).__name__}().{name} is {actual!r}, "
                            f"the stub's default {default!r}")
    return problems


# ---------------------------------------------------------------------------
# the tests

@pytest.fixture(scope="module", params=EXTENSIONS)
def pair(request: pytest.FixtureRequest) -> tuple[ModuleType, Stub]:
    module = importlib.import_module(f"pushcore.{request.param}")
    assert module.__file__ is not None
    path = Path(module.__file__).with_name(f"{request.param}.pyi")
    assert path.is_file(), f"no stub {path} beside {module.__file__}"
    return module, parse_stub(path)


def test_every_public_name_is_in_the_stub(pair: tuple[ModuleType, Stub]) -> None:
    module, stub = pair
    missing = runtime_public_names(module) - set(stub.declared)
    assert not missing, f"{module.__name__} has public names the stub {stub.path.name} lacks: {sorted(missing)}"


def test_every_stub_name_exists(pair: tuple[ModuleType, Stub]) -> None:
    module, stub = pair
    extra = {name for name in stub.declared if not hasattr(module, name)}
    assert not extra, f"{stub.path.name} declares names {module.__name__} does not have: {sorted(extra)}"


def test_stub_all_is_the_module_all(pair: tuple[ModuleType, Stub]) -> None:
    module, stub = pair
    runtime_all = getattr(module, "__all__", None)
    if stub.all is None and runtime_all is None:
        return
    assert stub.all is not None, f"{module.__name__} has __all__, its stub does not"
    assert runtime_all is not None, f"{stub.path.name} has __all__, {module.__name__} does not"
    assert sorted(stub.all) == sorted(runtime_all)


def test_class_members_match(pair: tuple[ModuleType, Stub]) -> None:
    module, stub = pair
    problems = []
    for name, cls_stub in stub.classes.items():
        cls = getattr(module, name, None)
        if not isinstance(cls, type):
            problems.append(f"{name}: a class in the stub, {type(cls).__name__} at runtime")
            continue
        declared = stub.class_members(name)
        missing = runtime_public_members(cls) - declared
        if missing:
            problems.append(f"{name}: public members missing from the stub: {sorted(missing)}")
        extra = {member for member in cls_stub.members if not hasattr(cls, member)}
        if extra:
            problems.append(f"{name}: the stub declares members the class lacks: {sorted(extra)}")
        runtime_bases = [base.__name__ for base in cls.__bases__ if base.__name__ not in _NO_RUNTIME_BASES]
        stub_bases = [base for base in cls_stub.bases if base not in _NO_RUNTIME_BASES]
        if runtime_bases != stub_bases:
            problems.append(f"{name}: bases {runtime_bases} at runtime, {stub_bases} in the stub")
    assert not problems, "\n".join(problems)


def test_signatures_match(pair: tuple[ModuleType, Stub]) -> None:
    module, stub = pair
    problems: list[str] = []
    checked = 0
    owners: list[tuple[str, ModuleType | type, dict[str, StubFunction]]] = [
        (module.__name__, module, stub.functions)]
    owners += [(f"{module.__name__}.{name}", getattr(module, name), cls.functions)
               for name, cls in stub.classes.items()]
    for where, owner, functions in owners:
        for name, function in functions.items():
            if function.overloaded:
                continue
            sig = _runtime_signature(owner, name, module)
            if sig is None:
                continue
            checked += 1
            stub_params = _stub_params(function.defs[0])
            runtime_params = _runtime_params(sig)
            if name == "__init__":
                # embedsignature's rendering of defaults is lossy ("(1,)" comes out
                # as "(1)"): compare the shape here, the defaults on an instance
                problems += _compare_params(f"{where}.{name}", stub_params, runtime_params, defaults=False)
                problems += _compare_instance_defaults(f"{where}.{name}", owner, stub_params)
            else:
                problems += _compare_params(f"{where}.{name}", stub_params, runtime_params)
    assert checked, f"no signature of {module.__name__} could be checked"
    assert not problems, "\n".join(problems)


def test_opaque_constructors_take_the_stub_keywords(pair: tuple[ModuleType, Stub]) -> None:
    """Constructors Python cannot introspect (Cython ``__cinit__``) accept the
    stub's parameters by keyword, with the stub's defaults."""
    module, stub = pair
    for name, cls_stub in stub.classes.items():
        function = cls_stub.functions.get("__init__")
        cls = getattr(module, name)
        if function is None or _runtime_signature(cls, "__init__", module) is not None:
            continue
        params = _stub_params(function.defs[0])[1:]
        kwargs = {pname: default for pname, kind, default in params
                  if kind in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY") and default not in (_NOTHING, Ellipsis)}
        assert len(kwargs) == len(params), f"{name}.__init__: every stub parameter needs a literal default"
        instance = cls(**kwargs)
        close = getattr(instance, "close", None)
        if close is not None:
            close()
        with pytest.raises(TypeError):
            cls(**kwargs, no_such_parameter_in_the_stub=1)


def test_literal_values_match(pair: tuple[ModuleType, Stub]) -> None:
    module, stub = pair
    problems = []
    for name, value in stub.literals.items():
        actual = getattr(module, name, _NOTHING)
        if actual != value or type(actual) is not type(value):
            problems.append(f"{name} = {actual!r} at runtime, {value!r} in the stub")
    for cls_name, cls_stub in stub.classes.items():
        cls = getattr(module, cls_name)
        for name, value in cls_stub.literals.items():
            actual = getattr(cls, name, _NOTHING)
            if actual != value or type(actual) is not type(value):
                problems.append(f"{cls_name}.{name} = {actual!r} at runtime, {value!r} in the stub")
    assert not problems, "\n".join(problems)


def test_stubs_ship_as_package_data() -> None:
    """pyproject.toml ships py.typed and the stubs with the package."""
    import tomllib

    import pushcore

    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    config = tomllib.loads((root / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]["pushcore"]
    assert "py.typed" in data and "*.pyi" in data
    package = Path(pushcore.__file__).parent
    assert (package / "py.typed").is_file()
    for name in EXTENSIONS:
        assert (package / f"{name}.pyi").is_file()
