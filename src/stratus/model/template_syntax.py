"""The spellings of a VM template: the classic `NAME = value` syntax (read and written), YAML, JSON.

The classic parser is a scannerless recursive descent: it asks for a name or a value where the
grammar expects one, so names stay strict while unquoted values may hold '=' or ':'. YAML and
JSON are decoded to plain data here, their errors turned into TemplateError with a position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import yaml

from stratus.model.errors import InvalidInput, TemplateError

__all__ = [
    "NAME_PATTERN",
    "NAME_RULE",
    "Value",
    "Vector",
    "detect_format",
    "format_classic",
    "load_json",
    "load_yaml",
    "parse_classic",
    "quote_value",
]

Vector = dict[str, str]
Value = str | Vector

#: An attribute name or a key inside a vector (normalised to upper case once read).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
NAME_RULE = "names use letters, digits, '_' and '-', and start with a letter or '_'"

_BLANK = re.compile(r"(?:[ \t\r\f\v]+|#[^\n]*)*")  # spaces and a comment, not the newline
_SPACE = re.compile(r"(?:[ \t\n\r\f\v]+|#[^\n]*)*")  # spaces, comments and newlines
_WORD = re.compile(r"[^ \t\n\r\f\v,\]#]+")  # an unquoted value
# The rest of a quoted string after its opening quote, closing quote included (unrolled loop).
_STRING_REST = {
    '"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL),
    "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*'", re.DOTALL),
}
_ESCAPE = re.compile(r"\\([\"'\\])")  # other backslashes stay as written: '\d' in a regex
_SAFE_WORD = re.compile(r"[A-Za-z0-9_./:$@%+-]+")  # written unquoted by the writer
_YAML_START = re.compile(r"[A-Za-z_][\w-]*[ \t]*:|---|%YAML")
_VECTOR_WIDTH = 80  # the writer breaks longer vectors into one key per line
_QUOTE_HINT = "quote values that contain spaces, ',', ']' or '#'"


def parse_classic(text: str, source: str = "template") -> list[tuple[str, Value]]:
    """Parse the classic syntax into (UPPERCASE name, value) pairs, in the order written."""
    return _ClassicParser(text, source).parse()


class _ClassicParser:
    """Reads one template; `pos` walks the text and every error names its line and column."""

    __slots__ = ("pos", "source", "text")

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0

    def parse(self) -> list[tuple[str, Value]]:
        text, end = self.text, len(self.text)
        items: list[tuple[str, Value]] = []
        self._skip(_SPACE)
        while self.pos < end:
            name = self._name("an attribute name")
            self._skip(_BLANK)
            self._expect("=", f"expected '=' after attribute name {name}")
            self._skip(_BLANK)
            items.append((name, self._attribute_value(name)))
            self._skip(_BLANK)
            if self.pos < end and text[self.pos] != "\n":
                raise self._error(
                    f"expected the end of the line after the value of {name}, "
                    f"found {self._found()}",
                    hint=_QUOTE_HINT,
                )
            self._skip(_SPACE)
        return items

    def _attribute_value(self, name: str) -> Value:
        char = self._peek()
        if char == "[":
            return self._vector(name)
        if char in ("", "\n"):
            # Without this a forgotten value would silently take the next line's name.
            raise self._error(
                f"expected a value after '{name} =', found {self._found()}",
                hint='write "" for an empty value',
            )
        return self._scalar(f"after '{name} ='")

    def _vector(self, name: str) -> Vector:
        opened_at = self.pos
        self.pos += 1
        vector: Vector = {}
        while True:
            self._skip(_SPACE)
            char = self._peek()
            if char == "]":
                self.pos += 1
                return vector
            if char == "":
                raise self._unclosed(name, opened_at)
            key_at = self.pos
            key = self._name(f"a key inside the vector {name}, or ']' to close it")
            if key in vector:
                raise self._error(
                    f"key {key} appears twice in the vector {name}", at=key_at, hint="keep one"
                )
            self._skip(_SPACE)
            self._expect("=", f"expected '=' after key {key} in the vector {name}")
            self._skip(_SPACE)
            char = self._peek()
            if char == "[":
                raise self._error(
                    f"expected a value for {key}, found '[': a vector cannot hold a vector",
                    hint=f"is a ']' missing to close the vector {name} opened at line "
                    f"{self._line(opened_at)}?",
                )
            if char == "":
                raise self._unclosed(name, opened_at)
            vector[key] = self._scalar(f"after '{key} =' in the vector {name}")
            value_end = self.pos
            self._skip(_SPACE)
            char = self._peek()
            if char == ",":
                self.pos += 1
            elif char == "]":
                self.pos += 1
                return vector
            elif char == "" or "\n" in self.text[value_end : self.pos]:
                raise self._unclosed(name, opened_at)
            else:
                raise self._error(
                    f"expected ',' or ']' after the value of {key} in the vector {name}, "
                    f"found {self._found()}",
                    hint=_QUOTE_HINT,
                )

    def _scalar(self, where: str) -> str:
        char = self._peek()
        if char in ('"', "'"):
            return self._string(char)
        match = _WORD.match(self.text, self.pos)
        if match is None:
            raise self._error(f"expected a value {where}, found {self._found()}")
        self.pos = match.end()
        return match.group()

    def _string(self, quote: str) -> str:
        start = self.pos
        match = _STRING_REST[quote].match(self.text, start + 1)
        if match is None:
            raise self._error(
                "unterminated string starting here", at=start, hint=f"close it with {quote}"
            )
        self.pos = match.end()
        body = self.text[start + 1 : self.pos - 1]
        return _ESCAPE.sub(r"\1", body) if "\\" in body else body

    def _name(self, what: str) -> str:
        match = NAME_PATTERN.match(self.text, self.pos)
        if match is None:
            raise self._error(f"expected {what}, found {self._found()}", hint=NAME_RULE)
        self.pos = match.end()
        return match.group().upper()

    def _expect(self, char: str, message: str) -> None:
        if self._peek() != char:
            raise self._error(f"{message}, found {self._found()}")
        self.pos += 1

    def _skip(self, pattern: re.Pattern[str]) -> None:
        match = pattern.match(self.text, self.pos)
        if match is not None:  # both patterns match the empty string; this is for mypy
            self.pos = match.end()

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _found(self) -> str:
        char = self._peek()
        if char == "":
            return "the end of the template"
        if char == "\n":
            return "the end of the line"
        word = _WORD.match(self.text, self.pos)
        return repr(word.group()[:20]) if word else repr(char)

    def _line(self, at: int) -> int:
        return self.text.count("\n", 0, at) + 1

    def _unclosed(self, name: str, opened_at: int) -> TemplateError:
        return self._error(
            f"expected ']' to close the vector {name} opened at line {self._line(opened_at)}, "
            f"found {self._found()}"
        )

    def _error(
        self, message: str, *, at: int | None = None, hint: str | None = None
    ) -> TemplateError:
        at = self.pos if at is None else at
        column = at - self.text.rfind("\n", 0, at)  # 1-based: rfind gives -1 on the first line
        error = TemplateError(message, line=self._line(at), column=column, source=self.source)
        error.hint = hint
        return error


def quote_value(value: str) -> str:
    """Write a value so the classic parser reads it back unchanged; plain words stay unquoted."""
    if _SAFE_WORD.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\")
    if '"' in value and "'" not in value:  # REQUIREMENTS = 'NAME = "ec2"' reads better
        return f"'{escaped}'"
    return '"' + escaped.replace('"', '\\"') + '"'


def format_classic(items: Iterable[tuple[str, Value]]) -> str:
    """Write (name, value) pairs in the classic syntax, one attribute per line."""
    lines: list[str] = []
    for name, value in items:
        if isinstance(value, str):
            lines.append(f"{name} = {quote_value(value)}")
            continue
        pairs = [f"{key} = {quote_value(text)}" for key, text in value.items()]
        one_line = f"{name} = [ {', '.join(pairs)} ]"
        if len(one_line) <= _VECTOR_WIDTH and "\n" not in one_line:
            lines.append(one_line)
        else:
            lines.append(f"{name} = [\n  " + ",\n  ".join(pairs) + " ]")
    return "".join(line + "\n" for line in lines)


def detect_format(text: str) -> str:
    """Guess "json", "yaml" or "classic" from the first meaningful characters of a template."""
    if text.lstrip().startswith("{"):
        return "json"
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return "yaml" if _YAML_START.match(stripped) else "classic"
    return "classic"


def load_json(text: str, source: str = "template") -> object:
    """Decode JSON; a syntax error becomes a TemplateError, a repeated key an InvalidInput."""
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeated_keys)
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno, source=source
        ) from exc


def _object_without_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads keeps the last of repeated keys: refuse instead of dropping a DISK silently."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInput(
                f"key {key} appears twice in a JSON object",
                hint="give a repeated attribute as one key with a list of values",
            )
        result[key] = value
    return result


def load_yaml(text: str, source: str = "template") -> object:
    """Decode YAML with the safe loader; a syntax error becomes a TemplateError."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "syntax error"
        raise TemplateError(
            f"invalid YAML: {problem}", line=line, column=column, source=source
        ) from exc
    except yaml.YAMLError as exc:
        raise TemplateError(f"invalid YAML: {exc}", line=1, column=1, source=source) from exc
