"""Reading torch model files safely: ``.pt2`` archives of ``torch.export.save``; refusals for the rest.

``torch.export.load`` is not safe on an untrusted file (torch's own documentation says so): it unpickles
with the full unpickler in several places (weights or constants flagged ``use_pickle``, custom and
opaque objects, the legacy weight files, and the sample inputs whenever torch's ``weights_only``
unpickler refuses them), evaluates every symbolic-shape expression of the file with
``sympy.sympify`` (which calls ``eval``), imports the modules that a pytree spec names (``__enum__``
and ``defaultdict`` contexts), resolves operator names by walking attributes from ``torch`` (so a
graph node could call ``torch.ops.load_library`` or anything reachable from ``torch``), and
``ExportedProgram.module()`` executes the file's ``guards_code`` as Python source. Without trust,
:func:`check_pt2` reads the archive as zip, JSON and pickle *opcodes* (nothing is deserialised or
imported) and refuses every one of those vectors; :func:`load_program` then loads the file and checks
every graph node again against the allowed operators, and drops the guard code.

Everything above :func:`load_program` runs without importing torch (the CLI and the xdist controller
check a file before any slow import).
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import re
import zipfile
from pathlib import Path

from modtest.errors import ModelLoadError, UnsafeModelError

__all__ = ["check_model_file", "check_pt2", "describe_torch_file", "load_program", "EXPORT_HINT",
           "allowed_target"]

#: how to write a file modtest reads, for every refusal
EXPORT_HINT = ("export it with program = torch.export.export(model.eval(), (example_input,)) and save it "
               "with torch.export.save(program, 'model.pt2')")

#: operator namespaces a graph may call without trust: torch's own operator library
_SAFE_NAMESPACES = ("aten", "prims")
_OP_TARGET = re.compile(r"^torch\.ops\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
#: Python functions a serialised graph names for shape arithmetic (``_operator``, ``math``, ``torch.sym_*``)
_PY_TARGETS = frozenset(
    [f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos",
                                "pow", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_", "abs")]
    + [f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")]
    + [f"torch.{n}" for n in ("sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_sqrt", "sym_ite",
                              "sym_sum")])
#: names a symbolic-shape expression may use (torch's deserializer evaluates it with sympy.sympify)
_SYMPY_NAMES = frozenset((
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "True", "False", "oo", "floor", "ceiling", "sqrt", "Integer", "Rational", "Float", "Piecewise",
    # sympy.srepr, the form torch writes: Symbol('s77', positive=True, integer=True), Mul(Integer(2), ...)
    "Symbol", "Add", "Mul", "Pow", "NegativeOne", "One", "Zero", "Half", "Infinity", "NegativeInfinity",
    "precision", "positive", "negative", "nonnegative", "nonpositive", "integer", "noninteger", "real",
    "finite", "infinite", "nonzero", "zero", "even", "odd", "rational", "irrational", "commutative",
    "extended_real", "extended_positive", "extended_negative", "extended_nonnegative",
    "extended_nonpositive", "extended_nonzero", "prime", "composite", "complex", "imaginary"))
#: quoted strings sympy.srepr writes: a symbol's name or a float's digits
_QUOTED = re.compile(r"'(?:[a-z]{1,8}[0-9]+|[0-9.eE+-]+)'")
_SYMBOL = re.compile(r"^[a-z]{1,8}[0-9]+$")  # s0, s77, u3, ...
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_+\-*/%()<>=!&|~,.\s]*$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: what a pickle of plain tensors (torch.save of tensors, tuples, dicts) may name
_TENSOR_GLOBALS = frozenset([
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"),
    ("torch.serialization", "_get_layout"), ("torch", "strided"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "slice"),
])
_STORAGE = re.compile(r"^(Untyped|Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool|ComplexFloat|"
                      r"ComplexDouble|QUInt8|QInt8|QInt32|QUInt4x2|QUInt2x4)Storage$")
_DTYPES = frozenset(("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                     "uint8", "bool", "complex64", "complex128", "float", "double", "half", "long", "int"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def allowed_target(name: str) -> bool:
    """Whether a graph node may call ``name`` (a serialised target) without trust."""
    m = _OP_TARGET.match(name)
    if m:
        return m.group(1) in _SAFE_NAMESPACES
    return name in _PY_TARGETS


# --------------------------------------------------------------------------------------------
# Pickles, read as opcodes
# --------------------------------------------------------------------------------------------

def _pickle_globals(data: bytes, max_pickles: int | None = None) -> list[tuple[str, str]]:
    """The (module, name) pairs one or several concatenated pickles import (at most ``max_pickles``),
    read with :func:`pickletools.genops` (nothing is executed). A pickle that cannot be parsed is
    reported as importing ``("?", "unparseable")``."""
    found, strings = [], []
    stream = io.BytesIO(data)
    count = 0
    try:
        while stream.tell() < len(data) and (max_pickles is None or count < max_pickles):
            count += 1
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING",
                               "BINSTRING", "SHORT_BINSTRING"):
                    strings.append(arg)
                elif op.name == "GLOBAL":
                    module, _, name = str(arg).partition(" ")
                    found.append((module, name))
                elif op.name == "STACK_GLOBAL":
                    found.append((str(strings[-2]), str(strings[-1])) if len(strings) >= 2 else ("?", "?"))
                elif op.name in ("INST", "OBJ"):
                    found.append(("?", f"{op.name} opcode"))
    except Exception:  # noqa: BLE001 - anything genops cannot walk is not a plain tensor pickle
        found.append(("?", "unparseable"))
    return found


def _tensor_global(module: str, name: str) -> bool:
    if (module, name) in _TENSOR_GLOBALS:
        return True
    return module == "torch" and (_STORAGE.match(name) is not None or name in _DTYPES)


def _torch_save_pickles(data: bytes) -> list[tuple[bytes, int | None]]:
    """The pickles of a ``torch.save`` payload, with how many to read: ``*/data.pkl`` of the zip
    format, or the legacy format's five (magic number, protocol, system info, the object, the storage
    keys; raw storage bytes follow)."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(zf.read(n), None) for n in zf.namelist() if n.endswith(".pkl")]
    return [(data, 5)]


def _foreign_globals(data: bytes) -> list[str]:
    """Imports of a ``torch.save`` payload beyond plain tensors (each one can run code on loading)."""
    out = []
    for pkl, count in _torch_save_pickles(data):
        out += [f"{m}.{n}" for m, n in _pickle_globals(pkl, count) if not _tensor_global(m, n)]
    return sorted(set(out))


# --------------------------------------------------------------------------------------------
# .pt2 archives
# --------------------------------------------------------------------------------------------

def _walk(obj, key=None):
    """Yield (key, value) for every entry of nested dicts/lists of a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)


def _bad_expression(expr: str) -> bool:
    """Whether a symbolic-shape expression could do more than arithmetic when sympy evaluates it."""
    if not isinstance(expr, str):
        return True
    expr = _QUOTED.sub("0", expr)
    if not _EXPR_CHARS.match(expr) or "__" in expr or "lambda" in expr:
        return True
    if re.search(r"[A-Za-z_)\]]\s*\.", expr) or re.search(r"\.\s*[A-Za-z_]", expr):
        return True  # attribute access
    return any(i not in _SYMPY_NAMES and not _SYMBOL.match(i) and not i.isdigit()
               for i in _IDENT.findall(expr) if not i[0].isdigit())


def _program_risks(doc: dict) -> tuple[list[str], list[str]]:
    """(code from outside torch's operator library, other code-running content) of a serialised
    ExportedProgram (``models/<name>.json``)."""
    ops, other = [], []
    for key, value in _walk(doc):
        if key == "target" and isinstance(value, str):
            if not allowed_target(value):
                ops.append(value)
        elif key == "expr_str" and _bad_expression(value):
            other.append(f"a symbolic-shape expression {str(value)[:60]!r} (evaluated with sympy.sympify)")
        elif key in ("in_spec", "out_spec") and isinstance(value, str) and (
                "__enum__" in value or "default_factory_module" in value):
            other.append(f"a pytree spec that imports modules ({key})")
        elif key == "custom_obj_values" and value:
            other.append("TorchScript class objects (custom_obj_values)")
    for key in ("range_constraints",):
        for name in (doc.get(key) or {}):
            if _bad_expression(name):
                other.append(f"a range constraint on {str(name)[:60]!r}")
    return sorted(set(ops)), sorted(set(other))


def _payload_risks(zf: zipfile.ZipFile, root: str, kind: str, model: str) -> list[str]:
    """Pickled or code-carrying entries of the weights or constants of ``model``."""
    names = set(zf.namelist())
    base = f"{root}data/{kind}/"
    risks = []
    legacy = f"{base}{model}.pt"
    if legacy in names:  # written by torch <= 2.7: one torch.save of every tensor
        risks += [f"{kind} pickle importing {g}" for g in _foreign_globals(zf.read(legacy))]
    config_name = f"{base}model_{kind}_config.json"
    if config_name not in names:
        return risks
    try:
        config = json.loads(zf.read(config_name)).get("config", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ModelLoadError(f"corrupt {kind} table in the .pt2 archive: {_first_line(exc)}") from None
    for fqn, meta in (config or {}).items():
        path = str((meta or {}).get("path_name", ""))
        if (meta or {}).get("use_pickle"):
            risks.append(f"{kind[:-1]} {fqn!r} is a pickle")
        elif kind == "constants" and not path.startswith("tensor_"):
            risks.append(f"constant {fqn!r} is a Python or TorchScript object ({path.split('_')[0]})")
    return risks


def _archive_root(zf: zipfile.ZipFile, path: Path) -> str:
    """The folder prefix of a PT2 archive (``<name>/``), checked to be one."""
    names = zf.namelist()
    marks = [n for n in names if n.endswith("archive_format")]
    if not marks:
        if "version" in names or any(n.endswith("serialized_exported_program.json") for n in names):
            raise ModelLoadError(f"{path.name} was written by an old torch.export.save (before torch 2.8: "
                                 f"its weights are pickles); load it with that torch and save it again, or "
                                 f"{EXPORT_HINT}")
        if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
            raise ModelLoadError(f"{path.name} is a TorchScript archive, not a torch.export program; "
                                 f"{EXPORT_HINT}")
        raise ModelLoadError(f"{path.name} is a zip file but not a torch.export archive; {EXPORT_HINT}")
    root = marks[0][: -len("archive_format")]
    if zf.read(marks[0]).strip() != b"pt2":
        raise ModelLoadError(f"{path.name} is not a PT2 archive (archive_format "
                             f"{zf.read(marks[0])[:20]!r}); {EXPORT_HINT}")
    if any(n.startswith(f"{root}data/aotinductor/") or n.endswith((".so", ".cpp", ".dll", ".dylib"))
           for n in names):
        raise ModelLoadError(f"{path.name} is an AOTInductor package (compiled machine code, no graph); "
                             f"modtest needs the program's graph: {EXPORT_HINT}")
    return root


#: members of a PT2 archive under its root folder (torch/csrc/export/pt2_archive_constants.h); a
#: program's name is a Python identifier
_PT2_MEMBER = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/\w+\.json|data/weights/(\w+_weights_config\.json|\w+_model_param_config\.json|weight_\d+|\w+\.pt)"
    r"|data/constants/(\w+_constants_config\.json|\w+_model_constants_config\.json"
    r"|(tensor|custom_obj|opaque_obj)_\d+|\w+\.pt)|data/sample_inputs/\w+\.pt|extra/[\w.-]+)$")
_PT2_FOLDERS = frozenset(("", ".data/", "models/", "data/", "data/weights/", "data/constants/",
                          "data/sample_inputs/", "extra/"))


def _check_pt2_members(zf: zipfile.ZipFile, root: str, path: Path) -> None:
    """Every member is one torch.export.save writes, under the archive's root folder."""
    from modtest._validation import check_archive_members

    def allowed(name: str) -> bool:
        if not name.startswith(root):
            return False
        rest = name[len(root):]
        return rest in _PT2_FOLDERS if rest.endswith("/") or not rest else _PT2_MEMBER.match(rest) is not None

    check_archive_members(path.name, zf.namelist(), allowed, "torch.export.save")


def check_pt2(path, *, trust: bool = False) -> None:
    """Check a ``.pt2`` archive without importing torch: a torch.export archive holding one program
    named ``model``, and (unless ``trust``) nothing that would run code on loading it."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        if _starts_like_zip(path):
            raise ModelLoadError(f"corrupt .pt2 archive {path.name}: a zip file whose end is missing "
                                 f"(truncated or partly written); save it again, or {EXPORT_HINT}")
        raise ModelLoadError(f"{path.name} is not a .pt2 archive (torch.export.save writes a zip file); "
                             f"{describe_torch_file(path)}")
    try:
        with zipfile.ZipFile(path) as zf:
            root = _archive_root(zf, path)
            _check_pt2_members(zf, root, path)
            names = set(zf.namelist())
            models = sorted(n[len(root) + len("models/"):-len(".json")] for n in names
                            if n.startswith(f"{root}models/") and n.endswith(".json"))
            if "model" not in models:
                raise ModelLoadError(f"{path.name} holds no program named 'model' (found {models or 'none'}); "
                                     f"save one program with torch.export.save(program, path)")
            if trust:
                return
            try:
                doc = json.loads(zf.read(f"{root}models/model.json"))
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"corrupt program in {path.name}: {_first_line(exc)}") from None
            ops, other = _program_risks(doc)
            other += _payload_risks(zf, root, "weights", "model")
            other += _payload_risks(zf, root, "constants", "model")
            sample = f"{root}data/sample_inputs/model.pt"
            if sample in names:
                other += [f"sample inputs importing {g}" for g in _foreign_globals(zf.read(sample))]
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"corrupt .pt2 archive {path.name}: {_first_line(exc)}") from None
    if ops:
        shown = ", ".join(ops[:5]) + (f" (+{len(ops) - 5} more)" if len(ops) > 5 else "")
        raise UnsafeModelError(f"{path.name} calls operators from outside torch's aten library: {shown}; "
                               f"custom operators run their registering library's code: import it and pass "
                               f"trust=True (--modtest-trust-model) if you trust this file")
    if other:
        raise UnsafeModelError(f"{path.name} contains what would run code on loading: {'; '.join(other[:3])}; "
                               f"pass trust=True (--modtest-trust-model) if you trust this file")


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# .pt / .pth: what it is, and how to get a .pt2 instead
# --------------------------------------------------------------------------------------------

def describe_torch_file(path) -> str:
    """What a ``.pt``/``.pth`` file holds (read as zip names and pickle opcodes, never unpickled) and
    how to turn the model into a ``.pt2`` modtest reads."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read it ({_first_line(exc)})"
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
        if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
            return (f"{path.name} is a TorchScript archive (torch.jit.save); modtest reads torch.export "
                    f"programs (.pt2): {EXPORT_HINT}")
        if any(n.endswith("archive_format") for n in names):
            return f"{path.name} is a torch.export archive: name it with the suffix .pt2"
    if data.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(io.BytesIO(data)):
        return (f"{path.name} is a truncated or corrupt zip file (its end is missing); save it again, or "
                f"{EXPORT_HINT}")
    foreign = _foreign_globals(data)
    if any(g == "?.unparseable" for g in foreign):
        what = "a truncated or corrupt pickle" if data.startswith(b"\x80") else "not a torch file modtest knows"
        return f"{path.name} is {what}; {EXPORT_HINT}"
    if not foreign:
        return (f"{path.name} holds only tensors (a state dict: weights without the graph); build the model, "
                f"model.load_state_dict(torch.load(path)), then {EXPORT_HINT}")
    modules = [g for g in foreign if g.startswith("torch.nn.") or "." in g]
    return (f"{path.name} is a pickled Python object ({', '.join(modules[:2]) or 'custom classes'}; unpickling "
            f"it would run code from the file); modtest reads torch.export programs (.pt2): load it in a "
            f"process you trust and {EXPORT_HINT}")


def check_model_file(path, *, trust: bool = False) -> None:
    """Cheap checks of a torch model file, without importing torch: ``.pt2`` archives are checked
    (:func:`check_pt2`); ``.pt``/``.pth`` files are refused with what they hold and how to export."""
    path = Path(path)
    if path.suffix.lower() == ".pt2":
        check_pt2(path, trust=trust)
        return
    raise ModelLoadError(describe_torch_file(path))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_program(path, *, trust: bool = False):
    """The ``torch.export.ExportedProgram`` of a ``.pt2`` file, loaded safely (see the module
    docstring): checked first, every graph node checked again after loading, guard code dropped."""
    from modtest.frameworks.torch.runtime import SERIALIZER, import_torch

    path = Path(path)
    check_model_file(path, trust=trust)
    torch = import_torch(*SERIALIZER)
    import logging

    quiet = logging.getLogger("torch._export.serde.serialize")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.export.load(os.fspath(path))
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any torch failure becomes one line
        raise ModelLoadError(f"cannot load {path.name}: {type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        quiet.setLevel(level)
    if not isinstance(program, torch.export.ExportedProgram):
        raise ModelLoadError(f"{path.name} does not hold a torch.export.ExportedProgram")
    if not trust:
        bad = sorted({name for name in graph_targets(program) if not allowed_target(name)})
        if bad:
            raise UnsafeModelError(f"{path.name} calls operators from outside torch's aten library: "
                                   f"{', '.join(bad[:5])}; pass trust=True (--modtest-trust-model) if you "
                                   f"trust this file")
        program._guards_code = []  # Python source that ExportedProgram.module() would exec
    return program


def target_name(target) -> str:
    """A graph node's target as the serialiser names it (``torch.ops.aten.relu.default``, ``_operator.getitem``)."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return f"torch.ops.{target.namespace}.{target._opname}.{target._overloadname}"
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def graph_targets(program):
    """Every call_function target name of a program's graph and its subgraphs."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op == "call_function":
                yield target_name(node.target)
            elif node.op in ("call_module", "call_method"):
                yield f"{node.op}:{node.target}"
