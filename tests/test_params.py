"""Parameter declarations are parsed without running code, and values are checked against them."""

from __future__ import annotations

import math

import pytest

from clinops_lib.exceptions import ParameterError
from clinops_lib.runs import params as P

pytestmark = pytest.mark.unit

CONTRACT_CELL = """\
# comment lines and blank lines are allowed

rate = 200  # int, 1..2000
pause_scale = 0.01  # float, 0..1
expect = "promoted"  # one of: promoted, aborted
steps = [10, 50, 100]  # list[int]
db_password = ""  # secret
fault = "none"  # str
dry_run = False  # bool
target = "local"  # one of: local, kind, kubeconfig
offset = -5  # int, -10..
"""


def test_contract_examples_parse() -> None:
    decls = P.parse_declarations(CONTRACT_CELL)
    assert list(decls) == [
        "rate",
        "pause_scale",
        "expect",
        "steps",
        "db_password",
        "fault",
        "dry_run",
        "target",
        "offset",
    ]
    assert (decls["rate"].type, decls["rate"].lo, decls["rate"].hi, decls["rate"].default) == (
        "int",
        1,
        2000,
        200,
    )
    assert decls["pause_scale"].type == "float" and decls["pause_scale"].hi == 1
    assert decls["expect"].choices == ("promoted", "aborted") and decls["expect"].type == "str"
    assert decls["steps"].type == "list[int]"
    assert decls["db_password"].secret
    assert decls["dry_run"].type == "bool"
    assert decls["offset"].lo == -10 and decls["offset"].hi is None
    assert decls["target"].describe() == "one of: local, kind, kubeconfig"


def test_non_ascii_default_does_not_confuse_the_comment() -> None:
    decls = P.parse_declarations('site = "Zürich—Süd"  # str\n')
    assert decls["site"].default == "Zürich—Süd"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("rate = 200\n", "missing the trailing comment"),
        ("rate = 200  #\n", "empty"),
        ("rate = 100 * 2  # int\n", "literal"),
        ("rate = 200  # integer\n", "cannot read 'integer'"),
        ("rate = 5000  # int, 1..2000\n", "does not fit"),
        ('mode = "c"  # one of: a, b\n', "does not fit"),
        ("import os\n", "only `name = literal  # type`"),
        ("rate = 1  # int\nrate = 2  # int\n", "declared twice"),
        ("rate = 1  # int, 5..1\n", "empty range"),
        ("name = 'x'  # str, 1..3\n", "needs a numeric type"),
        ("rate = (\n 1)  # int\n", "one line"),
        ("rate = 1 +\n", "not valid Python"),
        ("pw = None  # secret\n", "secret's default must be a string"),
    ],
)
def test_bad_declarations_name_the_problem(source: str, fragment: str) -> None:
    with pytest.raises(ParameterError, match=None) as exc:
        P.parse_declarations(source)
    assert fragment in str(exc.value)


def test_two_parameters_cells_are_rejected(make_notebook, tmp_path) -> None:
    import nbformat

    path = make_notebook(tmp_path / "nb.ipynb", ["x = 1"], parameters="a = 1  # int")
    nb = nbformat.read(str(path), as_version=4)
    extra = nbformat.v4.new_code_cell("b = 2  # int")
    extra.metadata["tags"] = ["parameters"]
    nb.cells.append(extra)
    with pytest.raises(ParameterError, match="2 cells are tagged 'parameters'"):
        P.parse_notebook(nb)


DECLS = P.parse_declarations(CONTRACT_CELL)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("rate", "1500", 1500),
        ("pause_scale", "1", 1.0),
        ("expect", "aborted", "aborted"),
        ("steps", "[5, 25, 100]", [5, 25, 100]),
        ("fault", "1.10", "1.10"),  # a string parameter keeps the text as typed
        ("dry_run", "true", True),
        ("db_password", "s3cr3t-value", "s3cr3t-value"),
    ],
)
def test_cli_values_are_typed(name: str, text: str, expected: object) -> None:
    assert P.validate(DECLS, {}, {name: text}) == {name: expected}


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"rte": "5"}, "unknown parameter; this runbook declares: rate,"),
        ({"rate": "abc"}, "is not a number; allowed: int in 1..2000"),
        ({"rate": "1.5"}, "is not an integer"),
        ({"rate": "2001"}, "out of range; allowed: int in 1..2000"),
        ({"rate": "0"}, "out of range"),
        ({"pause_scale": ".nan"}, "not a finite number"),
        ({"expect": "maybe"}, "not allowed; allowed: one of: promoted, aborted"),
        ({"steps": "[1, x]"}, "element 1"),
        ({"steps": "7"}, "is not a list"),
        ({"dry_run": "maybe"}, "is not a bool"),
        ({"offset": "-11"}, "out of range"),
    ],
)
def test_bad_cli_values_name_the_parameter(given: dict[str, str], fragment: str) -> None:
    with pytest.raises(ParameterError) as exc:
        P.validate(DECLS, {}, given)
    assert fragment in str(exc.value)
    assert next(iter(given)) in str(exc.value)


def test_file_values_must_have_the_declared_type() -> None:
    with pytest.raises(ParameterError, match="'fault'.*not a string"):
        P.validate(DECLS, {"fault": 3}, {})
    with pytest.raises(ParameterError, match="'rate'.*not a number"):
        P.validate(DECLS, {"rate": True}, {})
    assert P.validate(DECLS, {"rate": 7, "pause_scale": 0}, {}) == {"rate": 7, "pause_scale": 0.0}


def test_redacted_hides_only_non_empty_secrets() -> None:
    values = {"db_password": "hunter2hunter2", "rate": 5}
    assert P.redacted(DECLS, values) == {"db_password": P.REDACTED, "rate": 5}
    assert P.redacted(DECLS, {"db_password": ""}) == {"db_password": ""}
    assert not math.isnan(P.validate(DECLS, {}, {"pause_scale": "0.5"})["pause_scale"])


def test_increasing_lists_reject_an_order_mistake_before_running() -> None:
    decls = P.parse_declarations("steps = [10, 50, 100]  # list[int], 1..100, increasing\n")
    assert decls["steps"].describe() == "list[int] in 1..100, increasing"
    assert P.validate(decls, {}, {"steps": "[5, 25, 100]"}) == {"steps": [5, 25, 100]}
    for bad, fragment in (("[50, 10]", "element 1: 10 after 50"), ("[10, 10]", "element 1: 10 after 10")):
        with pytest.raises(ParameterError) as exc:
            P.validate(decls, {}, {"steps": bad})
        assert "steps" in str(exc.value)
        assert "not increasing" in str(exc.value) and fragment in str(exc.value)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("steps = [50, 10]  # list[int], increasing\n", "does not fit"),
        ("rate = 1  # int, increasing\n", "'increasing' needs a numeric list type"),
        ('names = ["a"]  # list[str], increasing\n', "'increasing' needs a numeric list type"),
    ],
)
def test_increasing_declarations_are_checked(source: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as exc:
        P.parse_declarations(source)
    assert fragment in str(exc.value)
