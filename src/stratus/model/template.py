"""VM templates: the multi-map of attributes every spelling loads into, and its validated view.

`parse_template` reads the classic syntax, YAML or JSON into one `Template`; `vm_spec` checks
the attributes Stratus itself uses and types them, keeping unknown ones with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stratus.model.errors import InvalidInput
from stratus.model.template_syntax import (
    NAME_PATTERN,
    NAME_RULE,
    Value,
    Vector,
    detect_format,
    format_classic,
    load_json,
    load_yaml,
    parse_classic,
)
from stratus.model.units import parse_size_mb

__all__ = [
    "KNOWN_ATTRIBUTES",
    "Template",
    "Value",
    "Vector",
    "VmSpec",
    "parse_template",
    "vm_spec",
]

FORMATS = ("auto", "classic", "yaml", "json")


class Template:
    """Ordered multi-map of UPPERCASE attribute -> Value; DISK, NIC, EC2... may repeat.

    Equal templates hold the same values of each attribute in the same order (DISK 0, DISK 1...);
    the order between different attributes carries no meaning, as in the JSON form.
    """

    __slots__ = ("_index", "items")

    def __init__(self, items: Iterable[tuple[str, Value]] = ()) -> None:
        #: (name, value) pairs in the order given; read them, do not change them.
        self.items: list[tuple[str, Value]] = []
        self._index: dict[str, list[Value]] = {}  # name -> its values, for lookups and equality
        for name, value in items:
            upper = _checked_name(name, "attribute name")
            checked = _checked_value(upper, value)
            self.items.append((upper, checked))
            self._index.setdefault(upper, []).append(checked)

    def get(self, key: str) -> Value | None:
        """The first value of an attribute (any case), or None when it is absent."""
        values = self._index.get(key.upper())
        return values[0] if values else None

    def get_all(self, key: str) -> list[Value]:
        """Every value of an attribute, in order; empty when it is absent."""
        return list(self._index.get(key.upper(), ()))

    def scalar(self, key: str) -> str | None:
        """The first value of an attribute that must be a single value, not a vector."""
        value = self.get(key)
        if isinstance(value, dict):
            name = key.upper()
            raise InvalidInput(
                f"{name} must be a single value, not a vector", hint=f"write {name} = value"
            )
        return value

    def vectors(self, key: str) -> list[Vector]:
        """Every value of an attribute that must be a vector (`DISK = [ ... ]`), as copies."""
        name = key.upper()
        found: list[Vector] = []
        for value in self._index.get(name, ()):
            if isinstance(value, str):
                raise InvalidInput(
                    f"{name} must be a vector, not the value {value!r}",
                    hint=f"write {name} = [ KEY = value, ... ]",
                )
            found.append(dict(value))
        return found

    def to_dict(self) -> dict[str, Value | list[Value]]:
        """The JSON form: a repeated attribute becomes a list, in order of first appearance."""
        return {
            name: _copy(values[0]) if len(values) == 1 else [_copy(value) for value in values]
            for name, values in self._index.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, source: str = "template") -> Template:
        """Build a Template from the JSON/YAML form; numbers become text, booleans YES/NO."""
        if not isinstance(data, Mapping):
            raise _not_a_mapping(data, source)
        items: list[tuple[str, Value]] = []
        spelled: dict[str, object] = {}
        for key, raw in data.items():
            name = _checked_name(key, "attribute name", source)
            if name in spelled:
                raise InvalidInput(
                    f"{source}: attribute {name} is given twice (as {spelled[name]!r} and {key!r})",
                    hint="give one key with a list of values",
                )
            spelled[name] = key
            for value in raw if isinstance(raw, list) else [raw]:
                items.append((name, _checked_value(name, value, source, plain=True)))
        return cls(items)

    def to_text(self) -> str:
        """The classic syntax, quoted where needed so that it parses back to an equal Template."""
        return format_classic(self.items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self._index == other._index  # dict equality ignores the order between names

    __hash__ = None  # type: ignore[assignment]  # mutable vectors inside

    def __repr__(self) -> str:
        return f"Template({self.items!r})"


def parse_template(text: str, *, format: str = "auto", source: str = "template") -> Template:
    """Read a template written in the classic syntax, YAML or JSON ("auto" guesses which)."""
    if format not in FORMATS:
        raise InvalidInput(
            f"unknown template format {format!r}", hint=f"use one of {', '.join(FORMATS)}"
        )
    text = text.removeprefix("\ufeff")  # a byte-order mark left by some editors
    kind = detect_format(text) if format == "auto" else format
    if kind == "classic":
        return Template(parse_classic(text, source))
    data = load_json(text, source) if kind == "json" else load_yaml(text, source)
    if data is None and kind == "yaml":  # an empty YAML document
        return Template()
    if not isinstance(data, Mapping):
        raise _not_a_mapping(data, source)
    return Template.from_dict(data, source=source)


def _not_a_mapping(data: object, source: str) -> InvalidInput:
    return InvalidInput(
        f"{source}: a template must be a mapping of attribute names to values, "
        f"not {type(data).__name__}",
        hint="write NAME: value lines (YAML) or an object (JSON)",
    )


def _checked_name(name: object, what: str, source: str = "template") -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidInput(f"{source}: {name!r} is not a valid {what}", hint=NAME_RULE)
    return name.upper()


def _checked_value(
    name: str, value: object, source: str = "template", *, plain: bool = False
) -> Value:
    """Check one value: text, or a vector of text keyed by names; `plain` converts JSON scalars."""
    if not isinstance(value, Mapping):
        return _checked_text(name, value, source, plain=plain)
    vector: Vector = {}
    for key, item in value.items():
        upper = _checked_name(key, f"key in the vector {name}", source)
        if upper in vector:
            raise InvalidInput(f"{source}: key {upper} appears twice in the vector {name}")
        vector[upper] = _checked_text(f"{name}.{upper}", item, source, plain=plain)
    return vector


def _checked_text(where: str, value: object, source: str, *, plain: bool) -> str:
    if isinstance(value, str):
        return value
    if plain and isinstance(value, bool):  # before int: bool is an int
        return "YES" if value else "NO"
    if plain and isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping | list):
        raise InvalidInput(
            f"{source}: {where} is nested too deeply",
            hint="an attribute holds a value, a mapping of values, or a list of those",
        )
    if plain and value is None:
        raise InvalidInput(f"{source}: {where} has no value", hint='write "" for an empty value')
    expected = "text, a number or a boolean" if plain else "text"
    raise InvalidInput(
        f"{source}: {where} must be {expected}, not {type(value).__name__} ({value!r})",
        hint="quote it to keep it as text" if plain else None,
    )


def _copy(value: Value) -> Value:
    return value if isinstance(value, str) else dict(value)


# --- the validated view ------------------------------------------------------------------------

_SCALAR_ATTRIBUTES = frozenset(
    {
        "NAME", "DESCRIPTION", "LABELS", "CPU", "VCPU", "MEMORY", "USER_PRIORITY",
        "SCHED_REQUIREMENTS", "SCHED_RANK", "REQUIREMENTS", "RANK",
        "SCHED_DS_REQUIREMENTS", "SCHED_DS_RANK",
    }
)  # fmt: skip
_VECTOR_ATTRIBUTES = frozenset(
    {
        "DISK", "NIC", "OS", "CONTEXT", "GRAPHICS", "RAW", "FEATURES", "INPUT", "CPU_MODEL",
        "EC2", "PUBLIC_CLOUD", "METADATA",
    }
)  # fmt: skip
_REPEATABLE = frozenset({"DISK", "NIC", "INPUT", "EC2", "PUBLIC_CLOUD"})

#: The top-level attributes Stratus knows; others are kept as they are, with a warning.
KNOWN_ATTRIBUTES: frozenset[str] = _SCALAR_ATTRIBUTES | _VECTOR_ATTRIBUTES


@dataclass(frozen=True)
class VmSpec:
    """Validated, typed view of a VM template: what the scheduler and drivers read."""

    name: str | None
    cpu: float  # share of physical CPUs (> 0); defaults to VCPU
    vcpu: int  # virtual CPUs the guest sees (>= 1); defaults to 1
    memory: int  # MB
    disks: list[Vector]  # DISK sections, in order
    nics: list[Vector]  # NIC sections, in order
    os: Vector  # boot settings: KERNEL, INITRD, ROOT...; {} when absent
    context: Vector  # contextualisation variables; {} when absent
    requirements: str  # SCHED_REQUIREMENTS (or the older REQUIREMENTS); "" when absent
    rank: str  # SCHED_RANK (or the older RANK); "" when absent
    user_priority: int  # -1000..1000, higher is scheduled first
    providers: list[Vector]  # EC2 and PUBLIC_CLOUD sections, each with a TYPE
    warnings: list[str]  # one per unknown attribute


def vm_spec(template: Template) -> VmSpec:
    """Check and type a template's known attributes; errors name the attribute and the fix."""
    names = list(dict.fromkeys(name for name, _ in template.items))
    for name in names:
        if name in KNOWN_ATTRIBUTES:
            _check_shape(template, name)
    vcpu = _integer(template, "VCPU", default=1, low=1, high=None, example="VCPU = 2")
    return VmSpec(
        name=template.scalar("NAME"),
        cpu=_cpu(template, default=float(vcpu)),
        vcpu=vcpu,
        memory=_memory(template),
        disks=template.vectors("DISK"),
        nics=template.vectors("NIC"),
        os=_single_vector(template, "OS"),
        context=_single_vector(template, "CONTEXT"),
        requirements=_renamed(template, "SCHED_REQUIREMENTS", "REQUIREMENTS"),
        rank=_renamed(template, "SCHED_RANK", "RANK"),
        user_priority=_integer(
            template, "USER_PRIORITY", default=0, low=-1000, high=1000, example="USER_PRIORITY = 10"
        ),
        providers=_providers(template),
        warnings=[
            f"unknown attribute {name} kept as is" for name in names if name not in KNOWN_ATTRIBUTES
        ],
    )


def _check_shape(template: Template, name: str) -> None:
    count = len(template.get_all(name))
    if count > 1 and name not in _REPEATABLE:
        raise InvalidInput(f"{name} appears {count} times", hint=f"give {name} once")
    if name in _VECTOR_ATTRIBUTES:
        template.vectors(name)
    else:
        template.scalar(name)


def _cpu(template: Template, *, default: float) -> float:
    text = template.scalar("CPU")
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(
            f"CPU = {text!r} is not valid: expected a number greater than 0 "
            "(the share of a physical CPU)",
            hint="e.g. CPU = 0.5",
        )
    return value


def _integer(
    template: Template, name: str, *, default: int, low: int, high: int | None, example: str
) -> int:
    text = template.scalar(name)
    if text is None:
        return default
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        expected = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise InvalidInput(
            f"{name} = {text!r} is not valid: expected a whole number {expected}",
            hint=f"e.g. {example}",
        )
    return value


def _memory(template: Template) -> int:
    text = template.scalar("MEMORY")
    if text is None:
        raise InvalidInput("MEMORY is missing: add e.g. MEMORY = 512")
    memory = parse_size_mb(text, what="MEMORY")
    if memory < 1:
        raise InvalidInput(f"MEMORY = {text!r} is less than 1 MB", hint="e.g. MEMORY = 512")
    return memory


def _single_vector(template: Template, name: str) -> Vector:
    vectors = template.vectors(name)
    return vectors[0] if vectors else {}


def _renamed(template: Template, name: str, old_name: str) -> str:
    """An attribute that also has an older spelling; giving both is ambiguous."""
    value, old_value = template.scalar(name), template.scalar(old_name)
    if value is not None and old_value is not None:
        raise InvalidInput(
            f"both {name} and {old_name} are given",
            hint=f"keep {name} only: {old_name} is its older spelling",
        )
    return value if value is not None else old_value or ""


def _providers(template: Template) -> list[Vector]:
    """EC2 sections (TYPE ec2 implied) and PUBLIC_CLOUD sections (TYPE required), in order."""
    providers: list[Vector] = []
    for name, value in template.items:
        if name not in ("EC2", "PUBLIC_CLOUD") or isinstance(value, str):
            continue  # a scalar here was already refused by _check_shape
        section = dict(value)
        if name == "EC2":
            kind = section.setdefault("TYPE", "ec2")
            if kind.lower() != "ec2":
                raise InvalidInput(
                    f"an EC2 section has TYPE = {kind!r}",
                    hint=f"write it as PUBLIC_CLOUD = [ TYPE = {kind}, ... ]",
                )
        elif not section.get("TYPE"):
            raise InvalidInput(
                "a PUBLIC_CLOUD section has no TYPE: expected the cloud's driver name",
                hint="e.g. PUBLIC_CLOUD = [ TYPE = ec2, ... ]",
            )
        providers.append(section)
    return providers
