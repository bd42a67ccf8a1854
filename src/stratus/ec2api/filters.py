"""Describe* filters: Filter.N.Name / Filter.N.Value.M, EC2's wildcards, exact matching.

The store narrows a listing with what SQL can do (a superset); `matches` then checks each
object's facts exactly, so every Describe action filters the same way.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from stratus.ec2api.protocol import Ec2Error, Params

__all__ = ["Filter", "Filters", "parse_filters", "tag_items", "wildcard"]

MAX_VALUES = 200


@dataclass(frozen=True)
class Filter:
    name: str  # e.g. "instance-state-name", "tag:Name"
    values: tuple[str, ...]

    def accepts(self, facts: Sequence[str]) -> bool:
        """Whether one of the object's values for this filter matches one of ours."""
        return any(wildcard(p).fullmatch(fact) for p in self.values for fact in facts)


@dataclass(frozen=True)
class Filters:
    items: tuple[Filter, ...] = ()

    def values(self, name: str) -> tuple[str, ...] | None:
        """The values given for `name` (several filters of a name: their intersection is
        left to `matches`; this returns the first), None when it is not filtered."""
        for item in self.items:
            if item.name == name:
                return item.values
        return None

    def exact(self, name: str) -> tuple[str, ...] | None:
        """Like `values`, but only when none holds a wildcard (the store can match them)."""
        found = self.values(name)
        if found is None or any("*" in v or "?" in v for v in found):
            return None
        return found

    def tags(self) -> list[tuple[str, tuple[str, ...]]]:
        """The tag:KEY filters as (key, value patterns)."""
        return [(f.name[4:], f.values) for f in self.items if f.name.startswith("tag:")]

    def matches(self, facts: Mapping[str, Sequence[str]]) -> bool:
        """Every filter accepts the object's facts (name -> its values; tags as tag:KEY)."""
        return all(f.accepts(facts.get(f.name, ())) for f in self.items)


@lru_cache(maxsize=1024)
def wildcard(pattern: str) -> re.Pattern[str]:
    """EC2's filter value: * any run of characters, ? one; everything else literal."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S
    )


def parse_filters(params: Params, allowed: Collection[str]) -> Filters:
    """The request's filters; InvalidParameterValue names an unknown filter."""
    found = []
    for item in params.items("Filter"):
        name = item.required("Name", max_len=255)
        if name not in allowed and not (name.startswith("tag:") and "tag:" in allowed):
            known = ", ".join(sorted(allowed))
            raise Ec2Error(
                "InvalidParameterValue", f"The filter '{name}' is invalid (known: {known})"
            )
        values = tuple(item.texts("Value", max_len=1024))
        if not values:
            raise Ec2Error("InvalidParameterValue", f"The filter '{name}' has no Value")
        if len(values) > MAX_VALUES:
            raise Ec2Error(
                "InvalidParameterValue", f"The filter '{name}' has more than {MAX_VALUES} values"
            )
        found.append(Filter(name, values))
    return Filters(tuple(found))


def tag_items(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """A tagSet: one item per tag, in key order."""
    return [{"key": key, "value": tags[key]} for key in sorted(tags)]
