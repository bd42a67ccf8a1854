"""The expression language of SCHED_REQUIREMENTS and SCHED_RANK: tokens, parser, AST, printer.

Grammar, lowest precedence first (comparisons do not chain)::

    or      := and ('|' and)*
    and     := not ('&' not)*
    not     := '!'* compare
    compare := sum (('=' | '!=' | '>' | '<' | '>=' | '<=' | '@>') sum)?
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := '-'* atom
    atom    := NUMBER | "STRING" | ATTRIBUTE | '(' or ')'

Strings are double-quoted (`\\"` and `\\\\` escape); a bare word is always an attribute,
upper-cased. Meaning (wildcards, missing attributes, NaN) lives in `expr_compile`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast

from stratus.model.errors import ExpressionError

__all__ = [
    "COMPARE_OPS",
    "And",
    "Arith",
    "ArithOp",
    "Attr",
    "Compare",
    "CompareOp",
    "Expr",
    "Neg",
    "Not",
    "Num",
    "Or",
    "Str",
    "expr_attributes",
    "expr_to_text",
    "format_number",
    "parse_expression",
]

CompareOp: TypeAlias = Literal["=", "!=", ">", "<", ">=", "<=", "@>"]
ArithOp: TypeAlias = Literal["+", "-", "*", "/"]
COMPARE_OPS: frozenset[str] = frozenset({"=", "!=", ">", "<", ">=", "<=", "@>"})

_MAX_PARENS = 32  # nesting of '(': bounds the parser's recursion
_MAX_DEPTH = 64  # depth of the AST: bounds the compiler's and printer's recursion


@dataclass(frozen=True)
class Num:
    value: float  # never negative from the parser: `-5` is Neg(Num(5.0))


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Attr:
    name: str  # upper case


@dataclass(frozen=True)
class Neg:
    operand: Expr


@dataclass(frozen=True)
class Arith:
    op: ArithOp
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]  # two or more, one `a & b & c` chain


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]  # two or more, one `a | b | c` chain


Expr: TypeAlias = Num | Str | Attr | Neg | Arith | Compare | Not | And | Or


def format_number(value: float) -> str:
    """The shortest text that reads back as `value`: `4` for 4.0, `0.5`, `1e+20`."""
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: Literal["num", "str", "attr", "op", "end"]
    text: str  # the operator, the attribute (upper case) or the string's value
    pos: int  # 0-based offset in the expression


_LEXEME = re.compile(
    r"(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op>!=|>=|<=|@>|[=<>&|!()+\-*/])"
)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _tokenize(text: str) -> Iterator[_Token]:
    """Tokens on demand, so the first error reported is the leftmost one."""
    pos = _skip_space(text, 0)
    while pos < len(text):
        if text[pos] == '"':
            value, end = _read_string(text, pos)
            yield _Token("str", value, pos)
        else:
            match = _LEXEME.match(text, pos)
            if match is None:
                raise ExpressionError(
                    f"unexpected character {text[pos]!r}", expression=text, position=pos
                )
            kind = match.lastgroup
            lexeme = match.group()
            if kind == "num":
                yield _Token("num", lexeme, pos)
            elif kind == "attr":
                yield _Token("attr", lexeme.upper(), pos)
            else:
                yield _Token("op", lexeme, pos)
            end = match.end()
        pos = _skip_space(text, end)
    yield _Token("end", "", len(text))


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The value of the string opening at `start` and the offset after its closing quote."""
    chars: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\':
            pos += 1
            char = text[pos]
        chars.append(char)
        pos += 1
    raise ExpressionError(
        "unterminated string: close it with '\"'", expression=text, position=start
    )


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the expression"
    if token.kind == "attr":
        return f"attribute {token.text}"
    if token.kind == "num":
        return f"number {token.text}"
    if token.kind == "str":
        return f"string {token.text!r}"
    return f"'{token.text}'"


# --------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent with one token of lookahead, one method per precedence level."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.current = next(self.tokens)
        self.parens = 0

    def error(self, message: str, position: int) -> ExpressionError:
        return ExpressionError(message, expression=self.text, position=position)

    def peek(self) -> _Token:
        return self.current

    def advance(self) -> _Token:
        token = self.current
        if token.kind != "end":
            self.current = next(self.tokens)
        return token

    def accept(self, *ops: str) -> str | None:
        token = self.current
        if token.kind == "op" and token.text in ops:
            self.advance()
            return token.text
        return None

    def parse(self) -> Expr:
        expr = self.or_()
        token = self.peek()
        if token.kind == "end":
            return expr
        if token.text == ")" and token.kind == "op":
            raise self.error("unexpected ')': there is no '(' to close", token.pos)
        if token.kind == "op" and token.text in COMPARE_OPS:
            raise self.error(
                f"unexpected '{token.text}': comparisons do not chain, join them with '&'",
                token.pos,
            )
        raise self.error(f"unexpected {_describe(token)}: expected an operator", token.pos)

    def or_(self) -> Expr:
        operands = [self.and_()]
        while self.accept("|"):
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_(self) -> Expr:
        operands = [self.not_()]
        while self.accept("&"):
            operands.append(self.not_())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_(self) -> Expr:
        count = 0
        while self.accept("!"):
            count += 1
        expr = self.compare()
        for _ in range(count):
            expr = Not(expr)
        return expr

    def compare(self) -> Expr:
        left = self.sum()
        token = self.peek()
        if token.kind == "op" and token.text in COMPARE_OPS:
            self.advance()
            return Compare(cast(CompareOp, token.text), left, self.sum())
        return left

    def sum(self) -> Expr:
        expr = self.product()
        while op := self.accept("+", "-"):
            expr = Arith(cast(ArithOp, op), expr, self.product())
        return expr

    def product(self) -> Expr:
        expr = self.unary()
        while op := self.accept("*", "/"):
            expr = Arith(cast(ArithOp, op), expr, self.unary())
        return expr

    def unary(self) -> Expr:
        count = 0
        while self.accept("-"):
            count += 1
        expr = self.atom()
        for _ in range(count):
            expr = Neg(expr)
        return expr

    def atom(self) -> Expr:
        token = self.advance()
        if token.kind == "num":
            return Num(float(token.text))
        if token.kind == "str":
            return Str(token.text)
        if token.kind == "attr":
            return Attr(token.text)
        if token.kind == "op" and token.text == "(":
            return self.group(token)
        raise self.error(
            f"expected an attribute, number or string, found {_describe(token)}", token.pos
        )

    def group(self, opening: _Token) -> Expr:
        self.parens += 1
        if self.parens > _MAX_PARENS:
            raise self.error(f"more than {_MAX_PARENS} nested '('", opening.pos)
        expr = self.or_()
        closing = self.advance()
        if closing.kind == "end":
            raise self.error("unclosed '(': add the missing ')'", opening.pos)
        if closing.kind != "op" or closing.text != ")":
            raise self.error(
                f"expected ')' to close the '(' at position {opening.pos + 1},"
                f" found {_describe(closing)}",
                closing.pos,
            )
        self.parens -= 1
        return expr


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Neg | Not):
        return (expr.operand,)
    if isinstance(expr, Arith | Compare):
        return (expr.left, expr.right)
    if isinstance(expr, And | Or):
        return expr.operands
    return ()


def _check_depth(expr: Expr, text: str) -> None:
    """Refuses ASTs deeper than the recursion of the compiler and printer can take."""
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ExpressionError(
                f"expression nested more than {_MAX_DEPTH} levels deep: simplify it",
                expression=text,
                position=0,
            )
        stack.extend((child, depth + 1) for child in _children(node))


def parse_expression(text: str) -> Expr:
    """Parses a requirement or rank; raises ExpressionError naming the position and the fix."""
    if not text.strip():
        raise ExpressionError(
            'empty expression: write a condition such as COUNTRY = "ES"',
            expression=text,
            position=0,
        )
    expr = _Parser(text).parse()
    _check_depth(expr, text)
    return expr


def expr_attributes(expr: Expr) -> frozenset[str]:
    """The attribute names an expression reads (upper case)."""
    if isinstance(expr, Attr):
        return frozenset({expr.name})
    return frozenset().union(*(expr_attributes(child) for child in _children(expr)))


# --------------------------------------------------------------------------- printer

_ARITH_PRECEDENCE = {"+": 5, "-": 5, "*": 6, "/": 6}


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Or):
        return 1
    if isinstance(expr, And):
        return 2
    if isinstance(expr, Not):
        return 3
    if isinstance(expr, Compare):
        return 4
    if isinstance(expr, Arith):
        return _ARITH_PRECEDENCE[expr.op]
    if isinstance(expr, Neg):
        return 7
    return 8


def _wrap(expr: Expr, above: int) -> str:
    """`expr` as text, parenthesised unless its precedence is higher than `above`."""
    text = expr_to_text(expr)
    return text if _precedence(expr) > above else f"({text})"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expr_to_text(expr: Expr) -> str:
    """Canonical text of an expression, with only the parentheses it needs; re-parses equal."""
    if isinstance(expr, Num):
        return format_number(expr.value)
    if isinstance(expr, Str):
        return _quote(expr.value)
    if isinstance(expr, Attr):
        return expr.name
    if isinstance(expr, Neg):
        return "-" + _wrap(expr.operand, 6)
    if isinstance(expr, Not):
        return "!" + _wrap(expr.operand, 2)
    if isinstance(expr, Arith | Compare):
        level = _precedence(expr)
        left_bound = level if isinstance(expr, Compare) else level - 1
        return f"{_wrap(expr.left, left_bound)} {expr.op} {_wrap(expr.right, level)}"
    joiner = " | " if isinstance(expr, Or) else " & "
    return joiner.join(_wrap(operand, _precedence(expr)) for operand in expr.operands)
