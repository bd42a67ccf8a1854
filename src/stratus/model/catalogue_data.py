"""The shipped instance-type catalogue: a few dozen common EC2 types in two regions.

Where the figures come from, honestly: on-demand prices per hour for Linux, shared
tenancy, as published on the AWS EC2 on-demand pricing page
(https://aws.amazon.com/ec2/pricing/on-demand/, and the previous-generation page for m1),
transcribed by hand as of the date below; they were not fetched by a tool nor re-checked
against the live price list, and AWS changes prices. vCPU and memory are the published
instance specifications. Spot prices move by the minute: the spot offerings here are the
on-demand price less SPOT_DISCOUNT, a typical discount for these families, not a quote.
So every price here is indicative: good for ranking clouds and regions against each other
and for budgets of the right order, not for billing. Override it in the config with
current figures (`parse_catalogue` reads the same layout).

The m1 types are the source documents' (SMALL_INSTANCES = m1.small, LARGE = m1.large);
they are a previous generation, so no spot offering is listed for them, nor for t2.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CATALOGUE_DATE", "CATALOGUE_SOURCE", "SHIPPED", "SPOT_DISCOUNT"]

CATALOGUE_DATE = "2024-06-01"
CATALOGUE_SOURCE = (
    "AWS EC2 on-demand pricing pages (Linux, shared tenancy), transcribed by hand;"
    " spot = on-demand less a typical discount; indicative only"
)
#: Spot offerings cost the on-demand price times (1 - SPOT_DISCOUNT); typical, not quoted.
SPOT_DISCOUNT = 0.65
_SPOT_FAMILIES = ("t3.", "m5.", "c5.", "r5.")

# name -> (vCPU, memory MB, on-demand $/h in us-east-1, in eu-west-1)
_TYPES: dict[str, tuple[int, int, float, float]] = {
    "t2.micro": (1, 1024, 0.0116, 0.0126),
    "t2.small": (1, 2048, 0.023, 0.025),
    "t2.medium": (2, 4096, 0.0464, 0.05),
    "t2.large": (2, 8192, 0.0928, 0.1008),
    "t3.micro": (2, 1024, 0.0104, 0.0114),
    "t3.small": (2, 2048, 0.0208, 0.0228),
    "t3.medium": (2, 4096, 0.0416, 0.0456),
    "t3.large": (2, 8192, 0.0832, 0.0912),
    "m1.small": (1, 1740, 0.044, 0.047),  # 1.7 GiB
    "m1.medium": (1, 3840, 0.087, 0.095),  # 3.75 GiB
    "m1.large": (2, 7680, 0.175, 0.19),  # 7.5 GiB
    "m1.xlarge": (4, 15360, 0.35, 0.379),  # 15 GiB
    "m5.large": (2, 8192, 0.096, 0.107),
    "m5.xlarge": (4, 16384, 0.192, 0.214),
    "m5.2xlarge": (8, 32768, 0.384, 0.428),
    "c5.large": (2, 4096, 0.085, 0.096),
    "c5.xlarge": (4, 8192, 0.17, 0.192),
    "r5.large": (2, 16384, 0.126, 0.141),
}


def _region(column: int) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for name, (vcpu, memory_mb, *prices) in _TYPES.items():
        price = prices[column]
        entry: dict[str, Any] = {"vcpu": vcpu, "memory_mb": memory_mb, "price_per_hour": price}
        if name.startswith(_SPOT_FAMILIES):
            entry["spot_price_per_hour"] = round(price * (1 - SPOT_DISCOUNT), 5)
        entries[name] = entry
    return entries


#: The shipped catalogue in the layout `stratus.model.catalogue.parse_catalogue` reads.
SHIPPED: dict[str, Any] = {
    "date": CATALOGUE_DATE,
    "source": CATALOGUE_SOURCE,
    "offerings": {"ec2": {"us-east-1": _region(0), "eu-west-1": _region(1)}},
}
