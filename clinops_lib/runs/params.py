"""Runbook parameters: read the declarations in the ``parameters`` cell, check what a caller gives.

A runbook declares its parameters in one code cell tagged ``parameters``, one per line, with
a trailing comment that states the type and constraints (see docs/CONTRACTS.md)::

    rate = 200                  # int, 1..2000
    pause_scale = 0.01          # float, 0..1
    expect = "promoted"         # one of: promoted, aborted
    steps = [10, 50, 100]       # list[int], 1..100
    db_password = ""            # secret
    fault = "none"              # str

The cell is parsed with :mod:`ast` (never executed): the runner must be able to reject a bad
value *before* a kernel starts, and a notebook's cell must not be able to run code in the
runner's process. Blank lines and whole-line comments are allowed; anything else is an error.

Grammar of the comment: comma-separated clauses, in any order except that ``one of:`` takes
the rest of the line::

    <type>        int | float | str | bool | secret | fault | version | list[int] | list[float] | list[str]
    <lo>..<hi>    inclusive range (either side may be empty); for lists it bounds each element;
                  ``<`` next to the dots excludes that bound: ``0<..1`` is (0, 1], ``0<..<1`` is (0, 1)
    increasing    numeric lists only: each element greater than the one before (canary weights)
    one of: a, b  allowed values (type taken from <type> or else from the default)

``increasing`` exists so an order mistake (``-p steps '[50, 10]'``) is rejected by the runner,
before a kernel starts, instead of failing half-way through a drill. For the same reason a
declaration states the *real* range: ``pause_scale`` 0 or ``alpha`` 1 would be refused by the
drill, so their declarations exclude those bounds, and the two string types with a grammar of
their own are checked by that grammar's own code: ``fault`` by :meth:`FaultProfile.parse`,
``version`` by the one version rule (empty means "the chart's" / "what runs now").

Values reach messages through :func:`shown`, which bounds them: a parameter given as a
5,000-digit integer or a deeply nested YAML list gets a one-line error, not a screenful.
YAML from users (``-p`` values, ``-f`` files) is read by :func:`load_yaml`, which refuses
anchors/aliases (a few lines of aliases expand to billions of elements) and duplicate keys
(the later one would silently win).
"""

from __future__ import annotations

import ast
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ParameterError

__all__ = [
    "REDACTED",
    "Declaration",
    "find_parameters_cell",
    "load_yaml",
    "parse_declarations",
    "shown",
    "parse_notebook",
    "redacted",
    "validate",
    "validate_cli_value",
]

REDACTED = "***REDACTED***"
SCALAR_TYPES = ("int", "float", "str", "bool")
LIST_TYPES = tuple(f"list[{t}]" for t in ("int", "float", "str"))
STRING_TYPES = ("str", "secret", "fault", "version")
KNOWN_TYPES = (*SCALAR_TYPES, *LIST_TYPES, "secret", "fault", "version")

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 60
_SHOWN.maxother = 60
_SHOWN.maxlong = 40
_SHOWN.maxlist = 6
_SHOWN.maxdict = 6
_SHOWN.maxlevel = 3


def shown(value: Any) -> str:
    """A bounded repr for messages: huge integers, long strings and nested lists are abbreviated."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    return _SHOWN.repr(value)


@dataclass(frozen=True)
class Declaration:
    """One declared parameter: its default and what values it accepts."""

    name: str
    default: Any
    type: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] = field(default_factory=tuple)
    line: int = 0
    increasing: bool = False
    lo_open: bool = False  # the value must be > lo (``lo<..``), not >=
    hi_open: bool = False  # the value must be < hi (``..<hi``), not <=

    @property
    def secret(self) -> bool:
        return self.type == "secret"

    def describe(self) -> str:
        """What is allowed, for error messages: ``int in 1..2000``, ``one of: a, b``."""
        if self.choices:
            return "one of: " + ", ".join(str(c) for c in self.choices)
        text = "str (secret)" if self.secret else self.type
        if self.lo is not None or self.hi is not None:
            lo = "" if self.lo is None else _fmt(self.lo) + ("<" if self.lo_open else "")
            hi = "" if self.hi is None else ("<" if self.hi_open else "") + _fmt(self.hi)
            text += f" in {lo}..{hi}"
        if self.increasing:
            text += ", increasing"
        return text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -- parsing the cell -----------------------------------------------------------------------
def _parse_number(text: str, name: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise ParameterError(name, f"range bound {text!r} is not a number") from e
    if not math.isfinite(value):
        raise ParameterError(name, f"range bound {text!r} is not finite")
    return value


def _type_of_default(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    for py, name in ((int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, py):
            return name
    return "str"


def _parse_spec(name: str, default: Any, spec: str, line: int) -> Declaration:
    spec = spec.strip()
    if not spec:
        raise ParameterError(name, f"line {line}: the trailing comment declaring its type is empty")
    type_: str | None = None
    lo = hi = None
    choices: tuple[Any, ...] = ()
    increasing = False
    lo_open = hi_open = False
    rest = spec
    lowered = rest.lower()
    if "one of:" in lowered:
        at = lowered.index("one of:")
        raw_choices = [c.strip() for c in rest[at + len("one of:") :].split(",")]
        if not all(raw_choices):
            raise ParameterError(name, f"line {line}: empty choice in {spec!r}")
        rest = rest[:at]
        choices = tuple(raw_choices)
    for clause in (c.strip() for c in rest.split(",")):
        if not clause:
            continue
        if ".." in clause:
            a, _, b = clause.partition("..")
            a, b = a.strip(), b.strip()
            lo_open, hi_open = a.endswith("<"), b.startswith("<")
            lo, hi = _parse_number(a.rstrip("<"), name), _parse_number(b.lstrip("<"), name)
            if (lo_open and lo is None) or (hi_open and hi is None):
                raise ParameterError(name, f"line {line}: '<' next to a missing bound in {clause!r}")
            if lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_open or hi_open))):
                raise ParameterError(name, f"line {line}: empty range {clause!r}")
        elif clause.lower() == "increasing":
            increasing = True
        elif clause.replace(" ", "") in KNOWN_TYPES:
            if type_ is not None:
                raise ParameterError(name, f"line {line}: two types declared in {spec!r}")
            type_ = clause.replace(" ", "")
        else:
            raise ParameterError(
                name,
                f"line {line}: cannot read {clause!r} in {spec!r}; expected a type "
                f"({', '.join(KNOWN_TYPES)}), a range lo..hi, 'increasing' or 'one of: a, b'",
            )
    if type_ is None:
        if not choices:
            raise ParameterError(name, f"line {line}: no type declared in {spec!r}")
        type_ = _type_of_default(default)
    if choices:
        if type_ not in SCALAR_TYPES:
            raise ParameterError(name, f"line {line}: 'one of' needs a scalar type, not {type_}")
        choices = tuple(_coerce_choice(name, type_, c, line) for c in choices)
    if (lo is not None or hi is not None) and type_ not in ("int", "float", "list[int]", "list[float]"):
        raise ParameterError(name, f"line {line}: a range needs a numeric type, not {type_}")
    if increasing and type_ not in ("list[int]", "list[float]"):
        raise ParameterError(name, f"line {line}: 'increasing' needs a numeric list type, not {type_}")
    decl = Declaration(name=name, default=default, type=type_, lo=lo, hi=hi, choices=choices, line=line,
                       increasing=increasing, lo_open=lo_open, hi_open=hi_open)
    if not decl.secret:
        try:
            validate_value(decl, default)
        except ParameterError as e:
            raise ParameterError(
                name,
                f"line {line}: the default {default!r} does not fit its own declaration ({decl.describe()})",
            ) from e
    elif not isinstance(default, str):
        raise ParameterError(name, f'line {line}: a secret\'s default must be a string (use "")')
    return decl


def _coerce_choice(name: str, type_: str, text: str, line: int) -> Any:
    text = text.strip().strip("'\"")
    try:
        if type_ == "int":
            return int(text)
        if type_ == "float":
            return float(text)
    except ValueError as e:
        raise ParameterError(name, f"line {line}: choice {text!r} is not a {type_}") from e
    if type_ == "bool":
        if text.lower() not in ("true", "false"):
            raise ParameterError(name, f"line {line}: choice {text!r} is not a bool")
        return text.lower() == "true"
    return text


def parse_declarations(source: str) -> dict[str, Declaration]:
    """Parse a ``parameters`` cell's source into declarations (in order), without running it.

    Raises :class:`ParameterError` naming the line that does not follow the convention.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ParameterError("<parameters cell>", f"line {e.lineno}: not valid Python: {e.msg}") from e
    lines = source.splitlines()
    decls: dict[str, Declaration] = {}
    for node in tree.body:
        lineno = node.lineno
        if (
            not isinstance(node, ast.Assign)
            or len(node.targets) != 1
            or not isinstance(node.targets[0], ast.Name)
        ):
            raise ParameterError(
                "<parameters cell>",
                f"line {lineno}: only `name = literal  # type` "
                f"assignments are allowed, found {lines[lineno - 1].strip()!r}",
            )
        name = node.targets[0].id
        if node.end_lineno != lineno:
            raise ParameterError(name, f"line {lineno}: a declaration must fit on one line")
        try:
            default = ast.literal_eval(node.value)
        except ValueError as e:
            raise ParameterError(
                name, f"line {lineno}: the default must be a literal, not an expression"
            ) from e
        line_text = lines[lineno - 1]
        end_col = node.end_col_offset or 0
        tail = line_text.encode("utf-8")[end_col:].decode("utf-8", "replace").strip()  # offsets are bytes
        if not tail.startswith("#"):
            raise ParameterError(
                name,
                f"line {lineno}: missing the trailing comment declaring its type "
                f"(e.g. `{name} = ...  # int, 1..100`)",
            )
        if name in decls:
            raise ParameterError(name, f"line {lineno}: declared twice")
        decls[name] = _parse_spec(name, default, tail[1:], lineno)
    # every non-blank line must be part of a declaration or a whole-line comment
    covered = {n.lineno for n in tree.body}
    for i, text in enumerate(lines, start=1):
        stripped = text.strip()
        if stripped and not stripped.startswith("#") and i not in covered:
            raise ParameterError("<parameters cell>", f"line {i}: {stripped!r} is not a declaration")
    return decls


def find_parameters_cell(nb: Mapping[str, Any]) -> int | None:
    """Index of the one code cell tagged ``parameters`` (None if there is none).

    More than one such cell is an error: papermill would inject after the first and the
    second would silently overwrite the given values.
    """
    found = [
        i
        for i, cell in enumerate(nb.get("cells", []))
        if "parameters" in (cell.get("metadata", {}).get("tags") or [])
    ]
    if len(found) > 1:
        raise ParameterError(
            "<parameters cell>",
            f"{len(found)} cells are tagged 'parameters' (cells {found}); exactly one is allowed",
        )
    if found and nb["cells"][found[0]].get("cell_type") != "code":
        raise ParameterError("<parameters cell>", f"cell {found[0]} is tagged 'parameters' but is not code")
    return found[0] if found else None


def parse_notebook(nb: Mapping[str, Any]) -> dict[str, Declaration]:
    """The declarations of a notebook (empty when it has no ``parameters`` cell)."""
    index = find_parameters_cell(nb)
    if index is None:
        return {}
    source = nb["cells"][index].get("source", "")
    if isinstance(source, list):
        source = "".join(source)
    return parse_declarations(source)


# -- checking values ---------------------------------------------------------------------------
def _check_scalar(decl: Declaration, value: Any, type_: str, what: str) -> Any:
    name = decl.name
    if type_ == "bool":
        if not isinstance(value, bool):
            raise ParameterError(name, f"{what} {shown(value)} is not a bool; allowed: true or false")
        return value
    if type_ in STRING_TYPES:
        if not isinstance(value, str):
            raise ParameterError(name, f"{what} {shown(value)} is not a string; allowed: {decl.describe()}")
        return _check_grammar(decl, value, type_)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, f"{what} {shown(value)} is not a number; allowed: {decl.describe()}")
    if type_ == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ParameterError(
                    name, f"{what} {shown(value)} is not an integer; allowed: {decl.describe()}"
                )
            value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ParameterError(
                name, f"{what} {shown(value)} is not a finite number; allowed: {decl.describe()}"
            )
    below = decl.lo is not None and (value <= decl.lo if decl.lo_open else value < decl.lo)
    above = decl.hi is not None and (value >= decl.hi if decl.hi_open else value > decl.hi)
    if below or above:
        raise ParameterError(name, f"{what} {shown(value)} is out of range; allowed: {decl.describe()}")
    return value


def _check_grammar(decl: Declaration, value: str, type_: str) -> str:
    """``fault`` and ``version`` strings, checked by the rules the drill and the targets apply."""
    if type_ == "fault":
        from ..faults import FaultProfile

        FaultProfile.parse(value, parameter=decl.name)  # the grammar's own parser names the parameter
    elif type_ == "version" and value:
        from ..catalog import check_version

        check_version(value, decl.name)  # the one version rule, as every target applies it
    return value


def validate_value(decl: Declaration, value: Any) -> Any:
    """Check one value against its declaration; returns it normalised (1 -> 1.0 for floats)."""
    if decl.type.startswith("list["):
        if not isinstance(value, list):
            raise ParameterError(decl.name, f"value {shown(value)} is not a list; allowed: {decl.describe()}")
        inner = decl.type[5:-1]
        items = [_check_scalar(decl, v, inner, f"element {i}") for i, v in enumerate(value)]
        if decl.increasing:
            for i in range(1, len(items)):
                if items[i] <= items[i - 1]:
                    raise ParameterError(
                        decl.name,
                        f"value {shown(value)} is not increasing (element {i}: {items[i]!r} after "
                        f"{items[i - 1]!r}); allowed: {decl.describe()}",
                    )
        return items
    value = _check_scalar(decl, value, decl.type, "value")
    if decl.choices and value not in decl.choices:
        raise ParameterError(decl.name, f"value {shown(value)} is not allowed; allowed: {decl.describe()}")
    return value


def validate_cli_value(decl: Declaration, text: str) -> Any:
    """Turn a ``-p NAME VALUE`` string into a typed value: YAML for non-strings, raw for strings.

    A string parameter keeps the text as typed (``-p version 1.10`` stays ``"1.10"``).
    """
    if decl.type in STRING_TYPES:
        return validate_value(decl, text)
    value = load_yaml(text, decl.name, f"value {shown(text)}")
    return validate_value(decl, value)


def _number_problem(e: ValueError) -> str:
    if "digits" in str(e):
        return "a number with thousands of digits (more than Python converts); not a plausible value"
    return shown(str(e))


def load_yaml(text: str, name: str, what: str) -> Any:
    """YAML from a user, without aliases or duplicate keys; errors name ``name`` and stay short.

    ``what`` says what was being read (``"value '[1, 2'"``, ``"parameters file p.yaml"``).
    """
    import yaml

    class _Strict(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ParameterError(
                    name, f"{what}: YAML aliases (*name) are not allowed (line {mark.line + 1})"
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=deep)
                hashable = isinstance(key, str | int | float | bool)
                if hashable and key in seen:
                    raise ParameterError(
                        name, f"{what}: key {shown(key)} given twice (line {key_node.start_mark.line + 1})"
                    )
                if hashable:
                    seen.add(key)
                try:
                    self.construct_object(value_node, deep=deep)
                except ValueError as e:  # int() of a number with more digits than Python converts
                    raise ParameterError(
                        key if isinstance(key, str) else name, f"{what}: {_number_problem(e)}"
                    ) from e
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=_Strict)  # noqa: S506 - _Strict is a SafeLoader
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ParameterError(name, f"{what} is not valid YAML ({shown(str(problem))})") from e
    except ValueError as e:  # int() of a number with more digits than Python converts
        raise ParameterError(name, f"{what}: {_number_problem(e)}") from e
    except RecursionError as e:
        raise ParameterError(name, f"{what} is nested too deeply") from e


def validate(
    decls: Mapping[str, Declaration], given: Mapping[str, Any], cli: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Check given values (typed, e.g. from a YAML file) and CLI strings against declarations.

    Returns only the parameters that were given, normalised. Unknown names are an error that
    lists the declared ones, so a typo never runs silently with the default.
    """
    out: dict[str, Any] = {}
    sources: list[tuple[Mapping[str, Any], bool]] = [(given, False), (cli or {}, True)]
    for values, is_cli in sources:
        for name, value in values.items():
            if name not in decls:
                known = ", ".join(decls) or "none"
                raise ParameterError(name, f"unknown parameter; this runbook declares: {known}")
            decl = decls[name]
            out[name] = validate_cli_value(decl, value) if is_cli else validate_value(decl, value)
    return out


def redacted(decls: Mapping[str, Declaration], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values with every ``secret`` parameter replaced by ``***REDACTED***`` (when non-empty)."""
    out = {}
    for name, value in values.items():
        decl = decls.get(name)
        out[name] = REDACTED if decl is not None and decl.secret and value else value
    return out
