"""The one evaluator of expressions: compiles an AST into numpy code over columns of N hosts.

Meaning of the language:

- A quoted string on either side compares as strings; `=` and `!=` match the right side as a
  case-sensitive shell pattern (`*`, `?`, `[..]`); `<`, `>`... compare lexically.
- Otherwise both sides compare as numbers; two attributes compare as numbers on hosts where
  both parse as numbers and as strings elsewhere.
- `L @> R`: L is a list (items separated by commas or spaces) that holds R exactly.
- A missing attribute makes every comparison false (`!=` too); in arithmetic it is NaN.
  Division by zero is NaN. A rank of NaN is -inf.
- In a condition a value is true when it is a number other than 0; in arithmetic a condition
  is 1.0 or 0.0.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from stratus.model.expr import (
    And,
    Arith,
    Attr,
    Compare,
    Expr,
    Neg,
    Not,
    Num,
    Or,
    Str,
    format_number,
)

__all__ = [
    "BoolArray",
    "Columns",
    "FloatArray",
    "MappingColumns",
    "Rank",
    "Requirement",
    "TextArray",
    "compile_rank",
    "compile_requirement",
    "evaluate_rank",
    "evaluate_requirement",
    "numbers_as_text",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
TextArray: TypeAlias = npt.NDArray[np.object_]
Requirement: TypeAlias = Callable[["Columns"], BoolArray]
Rank: TypeAlias = Callable[["Columns"], FloatArray]


class Columns(Protocol):
    """Host attributes as columns over N hosts. Returned arrays are read, never written."""

    @property
    def size(self) -> int: ...

    def numeric(self, name: str) -> FloatArray:
        """float64[N]: NaN where the attribute is missing or not a number."""
        ...

    def text(self, name: str) -> TextArray:
        """object[N] of str, None where missing; a column whose values change is a new array."""
        ...


# --------------------------------------------------------------------------- values

_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _parse_number(text: str) -> float:
    return float(text) if _NUMBER.fullmatch(text) else math.nan


def _attribute_value(value: object) -> tuple[float, str | None]:
    """An attribute's (number, text): numbers also read as text, numeric text as numbers."""
    if value is None:
        return math.nan, None
    if isinstance(value, bool):
        return float(value), str(value).lower()
    if isinstance(value, int | float):
        number = float(value)
        return (math.nan, None) if math.isnan(number) else (number, format_number(number))
    if isinstance(value, str):
        return _parse_number(value), value
    if isinstance(value, list | tuple | set | frozenset):
        return math.nan, ",".join(str(item) for item in value)
    return math.nan, str(value)


def numbers_as_text(values: FloatArray) -> TextArray:
    """A numeric column as text (`4`, `0.5`), None where NaN; formats each distinct value once."""
    distinct, inverse = np.unique(values, return_inverse=True)
    texts = [None if math.isnan(v) else format_number(v) for v in distinct.tolist()]
    return np.array(texts, dtype=object)[inverse.reshape(values.shape)]


class MappingColumns:
    """Columns over attribute mappings, one per host; keys are case-insensitive."""

    def __init__(self, rows: Sequence[Mapping[str, object]]) -> None:
        self._rows = [{key.upper(): value for key, value in row.items()} for row in rows]
        self._numeric: dict[str, FloatArray] = {}
        self._text: dict[str, TextArray] = {}

    @property
    def size(self) -> int:
        return len(self._rows)

    def numeric(self, name: str) -> FloatArray:
        if name not in self._numeric:
            self._build(name)
        return self._numeric[name]

    def text(self, name: str) -> TextArray:
        if name not in self._text:
            self._build(name)
        return self._text[name]

    def _build(self, name: str) -> None:
        seen: dict[object, tuple[float, str | None]] = {}
        numbers = np.empty(len(self._rows), dtype=np.float64)
        texts = np.empty(len(self._rows), dtype=object)
        for i, row in enumerate(self._rows):
            value = row.get(name)
            key = (type(value), value) if isinstance(value, str | int | float) else None
            pair = seen.get(key) if key is not None else None
            if pair is None:
                pair = _attribute_value(value)
                if key is not None:
                    seen[key] = pair
            numbers[i], texts[i] = pair
        self._numeric[name] = numbers
        self._text[name] = texts


# --------------------------------------------------------------------------- text columns

_Codes: TypeAlias = npt.NDArray[np.intp] | int
_CACHE_MIN_SIZE = 256  # smaller columns are cheaper to factorise than to look up
_CACHE_ENTRIES = 64


class _Factorizer:
    """Splits text columns into (codes, distinct values), remembering recent big columns by
    identity: safe because a Columns returns a new array when a text column's values change."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[weakref.ref[TextArray], _Codes, list[str | None]]] = {}
        self._lock = threading.Lock()  # plan() runs in a worker thread; the API may evaluate too

    def __call__(self, values: TextArray | str | None) -> tuple[_Codes, list[str | None]]:
        if not isinstance(values, np.ndarray):
            return 0, [values]
        with self._lock:
            hit = self._cache.get(id(values))
        if hit is not None and hit[0]() is values:
            return hit[1], hit[2]
        index: dict[str | None, int] = {}
        codes = np.fromiter(
            (index.setdefault(v, len(index)) for v in values.tolist()), np.intp, values.size
        )
        result = (codes, list(index))
        if values.size >= _CACHE_MIN_SIZE:
            with self._lock:
                if len(self._cache) >= _CACHE_ENTRIES:
                    del self._cache[next(iter(self._cache))]
                self._cache[id(values)] = (weakref.ref(values), *result)
        return result


_factorize = _Factorizer()
_PAIR_TABLE_LIMIT = 4096  # distinct left x right values evaluated as a full table


@lru_cache(maxsize=4096)
def _list_items(value: str) -> frozenset[str]:
    return frozenset(item for item in re.split(r"[,\s]+", value) if item)


_TEXT_OPS: dict[str, Callable[[str, str], bool]] = {
    "=": lambda v, w: fnmatchcase(v, w),
    "!=": lambda v, w: not fnmatchcase(v, w),
    ">": lambda v, w: v > w,
    "<": lambda v, w: v < w,
    ">=": lambda v, w: v >= w,
    "<=": lambda v, w: v <= w,
    "@>": lambda v, w: w in _list_items(v),
}


def _compare_texts(
    op: str, left: TextArray | str | None, right: TextArray | str | None, size: int
) -> BoolArray:
    """`op` over two text sources, calling the Python test once per distinct pair of values."""
    test = _TEXT_OPS[op]
    left_codes, left_values = _factorize(left)
    right_codes, right_values = _factorize(right)

    def check(v: str | None, w: str | None) -> bool:
        return v is not None and w is not None and test(v, w)

    if len(left_values) * len(right_values) <= _PAIR_TABLE_LIMIT:
        table = np.array([[check(v, w) for w in right_values] for v in left_values], dtype=bool)
        if isinstance(right_codes, int):  # the common `ATTRIBUTE = "constant"`: a 1-D lookup
            return _full(table[:, right_codes][left_codes], size)
        return _full(table[left_codes, right_codes], size)
    pairs = np.asarray(left_codes) * len(right_values) + right_codes
    distinct, inverse = np.unique(pairs, return_inverse=True)
    width = len(right_values)
    answers = [check(left_values[p // width], right_values[p % width]) for p in distinct.tolist()]
    return np.array(answers, dtype=bool)[inverse]


def _full(result: Any, size: int) -> BoolArray:
    """A boolean `result` as N rows; a scalar (both sides constant) is repeated."""
    if np.ndim(result) == 0:
        return np.full(size, bool(result))
    return np.asarray(result, dtype=np.bool_)


# --------------------------------------------------------------------------- compiler

_Kind: TypeAlias = Literal["number", "string", "attribute"]
_Numbers: TypeAlias = FloatArray | float
_Texts: TypeAlias = TextArray | str | None


@dataclass(frozen=True)
class _Operand:
    """A compiled value: how to read it as numbers and as text; constants skip the arrays."""

    kind: _Kind
    numbers: Callable[[Columns], _Numbers]
    texts: Callable[[Columns], _Texts]


def _constant(kind: _Kind, number: float, text: str | None) -> _Operand:
    return _Operand(kind, lambda _cols: number, lambda _cols: text)


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": lambda a, b: np.where(np.equal(b, 0), np.nan, np.true_divide(a, b)),
}
_NUMERIC_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": np.equal,
    "!=": lambda a, b: np.not_equal(a, b) & ~np.isnan(a) & ~np.isnan(b),
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def _operand(expr: Expr) -> _Operand:
    """Compiles an expression used as a value; a condition reads as 1.0 or 0.0."""
    if isinstance(expr, Num):
        return _constant("number", expr.value, format_number(expr.value))
    if isinstance(expr, Str):
        return _constant("string", math.nan, expr.value)
    if isinstance(expr, Attr):
        name = expr.name
        return _Operand("attribute", lambda cols: cols.numeric(name), lambda cols: cols.text(name))
    if isinstance(expr, Neg):
        inner = _operand(expr.operand)
        return _number_operand(lambda cols: np.negative(inner.numbers(cols)))
    if isinstance(expr, Arith):
        apply, left, right = _ARITH[expr.op], _operand(expr.left), _operand(expr.right)

        def arith(cols: Columns) -> _Numbers:
            with np.errstate(all="ignore"):  # overflow to inf and 0/0 are answers, not warnings
                result: _Numbers = apply(left.numbers(cols), right.numbers(cols))
            return result

        return _number_operand(arith)
    condition = _condition(expr)
    return _number_operand(lambda cols: condition(cols).astype(np.float64))


def _number_operand(numbers: Callable[[Columns], _Numbers]) -> _Operand:
    def texts(cols: Columns) -> _Texts:
        values = numbers(cols)
        if isinstance(values, np.ndarray) and values.ndim:
            return numbers_as_text(values)
        number = float(values)
        return None if math.isnan(number) else format_number(number)

    return _Operand("number", numbers, texts)


def _compare(expr: Compare) -> Requirement:
    op, left, right = expr.op, _operand(expr.left), _operand(expr.right)
    if op == "@>" or "string" in (left.kind, right.kind):
        return lambda cols: _compare_texts(op, left.texts(cols), right.texts(cols), cols.size)
    numeric = _NUMERIC_COMPARE[op]
    if left.kind == right.kind == "attribute":

        def mixed(cols: Columns) -> BoolArray:
            a, b = left.numbers(cols), right.numbers(cols)
            as_text = _compare_texts(op, left.texts(cols), right.texts(cols), cols.size)
            return np.where(np.isnan(a) | np.isnan(b), as_text, numeric(a, b))

        return mixed
    return lambda cols: _full(numeric(left.numbers(cols), right.numbers(cols)), cols.size)


def _condition(expr: Expr) -> Requirement:
    """Compiles an expression used as a condition; a value is true when a number other than 0."""
    if isinstance(expr, Compare):
        return _compare(expr)
    if isinstance(expr, Not):
        inner = _condition(expr.operand)
        return lambda cols: ~inner(cols)
    if isinstance(expr, And | Or):
        parts = [_condition(operand) for operand in expr.operands]
        combine = np.logical_and if isinstance(expr, And) else np.logical_or

        def chain(cols: Columns) -> BoolArray:
            result = parts[0](cols)
            for part in parts[1:]:
                result = combine(result, part(cols))
            return result

        return chain
    value = _operand(expr)

    def truthy(cols: Columns) -> BoolArray:
        numbers = value.numbers(cols)
        return _full(~np.isnan(numbers) & np.not_equal(numbers, 0), cols.size)

    return truthy


def compile_requirement(expr: Expr) -> Requirement:
    """A function giving, for each of N hosts, whether it satisfies `expr` (a new bool[N])."""
    return _condition(expr)


def compile_rank(expr: Expr) -> Rank:
    """A function giving each host's rank (a new float64[N]); NaN becomes -inf."""
    value = _operand(expr)

    def rank(cols: Columns) -> FloatArray:
        numbers = np.asarray(value.numbers(cols), dtype=np.float64)
        ranks = np.where(np.isnan(numbers), -np.inf, numbers)
        return np.full(cols.size, ranks) if ranks.ndim == 0 else ranks

    return rank


@lru_cache(maxsize=256)
def _cached_requirement(expr: Expr) -> Requirement:
    return compile_requirement(expr)


@lru_cache(maxsize=256)
def _cached_rank(expr: Expr) -> Rank:
    return compile_rank(expr)


def evaluate_requirement(expr: Expr, attrs: Mapping[str, object]) -> bool:
    """Whether one host with these attributes satisfies `expr` (the vectorised code, one row)."""
    return bool(_cached_requirement(expr)(MappingColumns([attrs]))[0])


def evaluate_rank(expr: Expr, attrs: Mapping[str, object]) -> float:
    """One host's rank under `expr` (the vectorised code, one row)."""
    return float(_cached_rank(expr)(MappingColumns([attrs]))[0])
