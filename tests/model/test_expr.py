"""The requirement/rank expression language: parsing, printing, errors and evaluation."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.model.errors import ExpressionError
from stratus.model.expr import (
    And,
    Arith,
    ArithOp,
    Attr,
    Compare,
    CompareOp,
    Expr,
    Neg,
    Not,
    Num,
    Or,
    Str,
    expr_attributes,
    expr_to_text,
    format_number,
    parse_expression,
)
from stratus.model.expr_compile import (
    MappingColumns,
    compile_rank,
    compile_requirement,
    evaluate_rank,
    evaluate_requirement,
)

HOST = {
    "COUNTRY": "ES",
    "CLUSTER": "c12",
    "HYPERVISOR": "kvm",
    "FREE_CPU": 4.0,
    "FREE_MEM": 8192,
    "PRIORITY": "10",
    "VERSION": "5.0",
    "TAGS": "gpu, ssd fast",
    "PCI": ["nvidia", "intel"],
    "ZERO": 0,
}


def holds(text: str, attrs: Mapping[str, object] | None = None) -> bool:
    return evaluate_requirement(parse_expression(text), HOST if attrs is None else attrs)


def rank(text: str, attrs: Mapping[str, object] | None = None) -> float:
    return evaluate_rank(parse_expression(text), HOST if attrs is None else attrs)


# --------------------------------------------------------------------------- parsing


def test_attribute_names_are_case_insensitive_and_upper_cased() -> None:
    assert parse_expression('country = "ES"') == Compare("=", Attr("COUNTRY"), Str("ES"))
    assert parse_expression("host.cpu_model") == Attr("HOST.CPU_MODEL")


def test_every_operator_parses_to_its_node() -> None:
    compare_ops: tuple[CompareOp, ...] = ("=", "!=", ">", "<", ">=", "<=", "@>")
    for op in compare_ops:
        assert parse_expression(f"A {op} 1") == Compare(op, Attr("A"), Num(1.0))
    arith_ops: tuple[ArithOp, ...] = ("+", "-", "*", "/")
    for arith in arith_ops:
        assert parse_expression(f"A {arith} 2") == Arith(arith, Attr("A"), Num(2.0))
    assert parse_expression("A & B & C") == And((Attr("A"), Attr("B"), Attr("C")))
    assert parse_expression("A | B") == Or((Attr("A"), Attr("B")))
    assert parse_expression("!A") == Not(Attr("A"))
    assert parse_expression("-A") == Neg(Attr("A"))


def test_precedence_from_or_down_to_unary_minus() -> None:
    a, b, c, d = Attr("A"), Attr("B"), Attr("C"), Attr("D")
    assert parse_expression("A | B & C") == Or((a, And((b, c))))
    assert parse_expression("!A & B") == And((Not(a), b))
    assert parse_expression("!A = 1") == Not(Compare("=", a, Num(1.0)))
    assert parse_expression("A + B > C * D") == Compare(">", Arith("+", a, b), Arith("*", c, d))
    assert parse_expression("A - B - C") == Arith("-", Arith("-", a, b), c)
    assert parse_expression("-A * B") == Arith("*", Neg(a), b)
    assert parse_expression("(A | B) & C") == And((Or((a, b)), c))


def test_strings_and_numbers() -> None:
    assert parse_expression('A = "say \\"hi\\" \\\\ bye"').right == Str('say "hi" \\ bye')  # type: ignore[union-attr]
    assert parse_expression("A = 1.5e3").right == Num(1500.0)  # type: ignore[union-attr]
    assert parse_expression("A = .5").right == Num(0.5)  # type: ignore[union-attr]


def test_expr_attributes_lists_every_attribute_once() -> None:
    expr = parse_expression('COUNTRY = "ES" & (free_mem > 10 | COUNTRY @> FREE_MEM) & !X')
    assert expr_attributes(expr) == frozenset({"COUNTRY", "FREE_MEM", "X"})
    assert expr_attributes(parse_expression('"a" = "a"')) == frozenset()


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('country="ES"&free_mem>4096', 'COUNTRY = "ES" & FREE_MEM > 4096'),
        ("(A | B) & C", "(A | B) & C"),
        ("A - (B - C)", "A - (B - C)"),
        ("-(A + 1) * 2.50", "-(A + 1) * 2.5"),
        ("!(A = 1) | !!B", "!A = 1 | !!B"),
        ("(A = 1) = (B = 2)", "(A = 1) = (B = 2)"),
        ("A - -1", "A - -1"),
    ],
)
def test_expr_to_text_is_canonical(text: str, canonical: str) -> None:
    assert expr_to_text(parse_expression(text)) == canonical


_names = st.sampled_from(["A", "B", "FREE_MEM", "HOST.X"])
_leaves = st.one_of(
    st.builds(Num, st.floats(min_value=0, max_value=1e20, allow_nan=False)),
    st.builds(Str, st.text(alphabet='ab*?"\\ ', max_size=5)),
    st.builds(Attr, _names),
)


def _grow(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    ops = st.sampled_from(["=", "!=", ">", "<", ">=", "<=", "@>"])
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Neg, children),
        st.builds(Not, children),
        st.builds(Arith, st.sampled_from(["+", "-", "*", "/"]), children, children),
        st.builds(Compare, ops, children, children),
        st.builds(And, many),
        st.builds(Or, many),
    )


expressions = st.recursive(_leaves, _grow, max_leaves=12)


@given(expressions)
def test_expr_to_text_parses_back_to_an_equal_ast(expr: Expr) -> None:
    assert parse_expression(expr_to_text(expr)) == expr


def test_format_number_reads_back_exactly() -> None:
    for value in (0.0, 4.0, 0.5, 1e20, 1e-7, 123456789.125, math.inf):
        assert float(format_number(value)) == value
    assert format_number(4.0) == "4"


# --------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("COUNTRY =", 9, "expected an attribute, number or string"),
        ("(A = 1", 0, "unclosed '('"),
        ("A = (1 + (2)", 4, "unclosed '('"),
        ("A = 1)", 5, "unexpected ')'"),
        ('NAME = "abc', 7, "unterminated string"),
        ("A = 1 = 2", 6, "comparisons do not chain"),
        ("A $ 1", 2, "unexpected character '$'"),
        ("A B", 2, "expected an operator"),
        ("A & | B", 4, "expected an attribute, number or string"),
        ("(A = )", 5, "expected an attribute, number or string"),
        ("A == 1", 3, "expected an attribute, number or string"),
        ("(A = 1 B)", 7, "expected ')'"),
        ("A = +1", 4, "expected an attribute, number or string"),
    ],
)
def test_syntax_error_names_position_and_expectation(
    text: str, position: int, message: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(text)
    assert caught.value.position == position
    assert message in str(caught.value)
    assert caught.value.expression == text


def test_python_code_is_a_syntax_error_never_run() -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression('__import__("os").system("true")')
    assert caught.value.position == 10


def test_absurd_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(ExpressionError, match="nested"):
        parse_expression("(" * 40 + "A" + ")" * 40)
    with pytest.raises(ExpressionError, match="nested"):
        parse_expression("!" * 100 + "A")
    long_chain = " & ".join(f"ID != {i}" for i in range(500))
    assert len(parse_expression(long_chain).operands) == 500  # type: ignore[union-attr]


# --------------------------------------------------------------------------- evaluation


def test_comparison_operators_on_numbers() -> None:
    assert holds("FREE_MEM = 8192") and not holds("FREE_MEM = 8191")
    assert holds("FREE_MEM != 8191") and not holds("FREE_MEM != 8192")
    assert holds("FREE_CPU > 3") and not holds("FREE_CPU > 4")
    assert holds("FREE_CPU < 5") and not holds("FREE_CPU < 4")
    assert holds("FREE_CPU >= 4") and not holds("FREE_CPU >= 4.5")
    assert holds("FREE_CPU <= 4") and not holds("FREE_CPU <= 3.5")


def test_logical_operators() -> None:
    assert holds('COUNTRY = "ES" & FREE_CPU > 1')
    assert not holds('COUNTRY = "ES" & FREE_CPU > 10')
    assert holds('COUNTRY = "FR" | FREE_CPU > 1')
    assert not holds('COUNTRY = "FR" | FREE_CPU > 10')
    assert holds('!COUNTRY = "FR"') and not holds('!COUNTRY = "ES"')
    assert holds('COUNTRY = "FR" | COUNTRY = "ES" & FREE_CPU > 1')  # & binds tighter
    assert not holds('(COUNTRY = "FR" | COUNTRY = "ES") & FREE_CPU > 10')


def test_arithmetic_and_its_precedence() -> None:
    assert rank("1 + 2 * 3") == 7.0
    assert rank("(1 + 2) * 3") == 9.0
    assert rank("10 - 4 - 3") == 3.0
    assert rank("12 / 4 / 3") == 1.0
    assert rank("-2 * 3 + FREE_CPU") == -2.0
    assert rank("--FREE_CPU") == 4.0
    assert holds("FREE_MEM / 1024 - FREE_CPU * 2 = 0")


def test_string_wildcards_follow_shell_patterns_case_sensitively() -> None:
    assert holds('CLUSTER = "c*"') and holds('CLUSTER = "c1?"') and holds('CLUSTER = "c[0-9]2"')
    assert not holds('CLUSTER = "C*"') and not holds('CLUSTER = "c?"')
    assert holds('CLUSTER != "d*"') and not holds('CLUSTER != "c*"')
    assert holds('CLUSTER = "c[!a-z]*"')
    assert not holds('CLUSTER = "c1"')  # the pattern matches the whole value


def test_strings_order_lexically() -> None:
    assert (
        holds('HYPERVISOR > "k"') and holds('HYPERVISOR <= "kvm"') and not holds('HYPERVISOR < "a"')
    )


def test_contains_reads_a_comma_or_space_separated_list() -> None:
    assert holds('TAGS @> "ssd"') and holds('TAGS @> "gpu"') and holds('TAGS @> "fast"')
    assert not holds('TAGS @> "ss"') and not holds('TAGS @> "gpu,"')
    assert holds('PCI @> "intel"') and not holds('PCI @> "amd"')
    assert holds('"1, 2 3" @> 2')


def test_numeric_label_compares_numerically_and_quoted_string_lexically() -> None:
    assert holds("PRIORITY > 9")  # "10" as a number
    assert not holds('PRIORITY > "9"')  # "10" < "9" as strings
    assert holds("VERSION = 5")  # "5.0" is the number 5
    assert not holds('VERSION = "5"')  # but not the string "5"
    assert holds('FREE_CPU = "4"')  # a number compared with a string reads as text
    assert holds('5 = "5"') and not holds('5.5 = "5"')


def test_two_attributes_compare_as_numbers_when_both_are_numbers_else_as_text() -> None:
    attrs = {"A": "10", "B": "9", "C": "abc", "D": "abd", "E": "a*"}
    assert holds("A > B", attrs)  # 10 > 9
    assert holds("C < D", attrs)  # "abc" < "abd"
    assert holds("C = E", attrs)  # right side as a pattern
    assert holds("A < C", attrs)  # "10" < "abc" as text


def test_missing_attribute_makes_every_comparison_false() -> None:
    for op in ("=", "!=", ">", "<", ">=", "<=", "@>"):
        assert not holds(f"MISSING {op} 1")
        assert not holds(f'MISSING {op} "x"')
        assert not holds(f"COUNTRY {op} MISSING")
    assert holds("!(MISSING = 1)")
    assert not holds("MISSING")
    assert rank("MISSING + 1") == -math.inf


def test_division_by_zero_is_nan_not_an_exception() -> None:
    assert rank("FREE_CPU / 0") == -math.inf
    assert rank("FREE_CPU / ZERO") == -math.inf
    assert not holds("FREE_CPU / 0 = 1") and not holds("FREE_CPU / 0 != 1")
    assert rank("0 / 0 + 1") == -math.inf


def test_values_as_conditions_and_conditions_as_numbers() -> None:
    assert holds("FREE_CPU") and not holds("ZERO") and not holds('"text"')
    assert rank("(FREE_CPU > 1) * 10 + (FREE_CPU > 8)") == 10.0
    assert rank('COUNTRY = "ES"') == 1.0


def test_compiled_requirement_and_rank_cover_every_host() -> None:
    rows = [{"COUNTRY": c, "FREE_MEM": m} for c, m in [("ES", 1), ("FR", 9), (None, 5)]]
    cols = MappingColumns(rows)
    assert compile_requirement(parse_expression('COUNTRY = "ES" | FREE_MEM > 4'))(
        cols
    ).tolist() == [
        True,
        True,
        True,
    ]
    assert compile_rank(parse_expression("FREE_MEM * 2"))(cols).tolist() == [2.0, 18.0, 10.0]
    assert compile_rank(parse_expression("7"))(cols).tolist() == [7.0, 7.0, 7.0]
    assert compile_requirement(parse_expression('"a" = "a"'))(cols).tolist() == [True] * 3


# --------------------------------------------------------------------------- one evaluator

_values = st.one_of(
    st.none(),
    st.sampled_from(["ES", "FR", "c1", "c12", "a b,c", "10", "5.0", "-3", "", "x*"]),
    st.integers(-5, 20),
    st.floats(-10, 10, allow_nan=False),
)
_hosts = st.lists(
    st.fixed_dictionaries({"A": _values, "B": _values, "FREE_MEM": _values}),
    min_size=1,
    max_size=30,
)


def _same_ranks(vectorised: np.ndarray, single: list[float]) -> bool:
    return bool(np.array_equal(vectorised, np.array(single), equal_nan=True))


@settings(max_examples=300, deadline=None)
@given(expressions, _hosts)
def test_vectorised_evaluation_equals_single_host_evaluation(
    expr: Expr, hosts: list[dict[str, object]]
) -> None:
    cols = MappingColumns(hosts)
    vectorised = compile_requirement(expr)(cols)
    assert vectorised.tolist() == [evaluate_requirement(expr, host) for host in hosts]
    ranks = compile_rank(expr)(cols)
    assert _same_ranks(ranks, [evaluate_rank(expr, host) for host in hosts])
    assert not np.isnan(ranks).any()


def test_many_distinct_value_pairs_take_the_same_answers() -> None:
    """Over 4096 distinct pairs the compiler switches strategy; the answers must not change."""
    hosts = [{"A": f"v{i % 97}*", "B": f"v{i % 89}{i % 7}"} for i in range(10_000)]
    expr = parse_expression("B = A")
    vectorised = compile_requirement(expr)(MappingColumns(hosts))
    sample = range(0, 10_000, 37)
    assert [bool(vectorised[i]) for i in sample] == [
        evaluate_requirement(expr, hosts[i]) for i in sample
    ]
    assert vectorised.any()
