"""The instance-type catalogue: lookups, cheapest fitting offering, shipped data, overrides."""

from __future__ import annotations

from typing import Any

import pytest

from stratus.model.catalogue import Catalogue, Offering, parse_catalogue, shipped_catalogue
from stratus.model.errors import InvalidInput


def _offer(name: str, vcpu: int, memory: int, price: float, **kw: Any) -> Offering:
    return Offering("ec2", kw.pop("region", "eu-west-1"), name, vcpu, memory, price, **kw)


CATALOGUE = Catalogue(
    [
        _offer("big", 8, 32768, 0.40),
        _offer("small", 1, 2048, 0.02),
        _offer("wide", 4, 4096, 0.05),
        _offer("narrow", 2, 4096, 0.05),  # same price as wide, fewer vCPUs: wins the tie
        _offer("small", 1, 2048, 0.007, spot=True),
        _offer("small", 1, 2048, 0.01, region="us-east-1"),
    ],
    date="2024-06-01",
    source="test",
)


def test_cheapest_fitting_picks_the_lowest_price_that_fits() -> None:
    assert CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 1, 1024) == _offer("small", 1, 2048, 0.02)
    fitting = CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 2, 3000)
    assert fitting is not None and fitting.name == "narrow"  # tie at 0.05: fewer vCPUs
    fitting = CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 3, 1024)
    assert fitting is not None and fitting.name == "wide"
    fitting = CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 1, 8192)
    assert fitting is not None and fitting.name == "big"


def test_cheapest_fitting_is_none_when_nothing_fits_or_the_region_is_unknown() -> None:
    assert CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 16, 1024) is None
    assert CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 1, 65536) is None
    assert CATALOGUE.cheapest_fitting("ec2", "ap-south-1", 1, 512) is None
    assert CATALOGUE.cheapest_fitting("gce", "eu-west-1", 1, 512) is None


def test_spot_is_a_separate_offering() -> None:
    spot = CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 1, 1024, spot=True)
    assert spot is not None and spot.spot and spot.price_per_hour == 0.007
    assert CATALOGUE.cheapest_fitting("ec2", "eu-west-1", 2, 1024, spot=True) is None
    assert CATALOGUE.get("ec2", "eu-west-1", "small", spot=True) == spot
    on_demand = CATALOGUE.get("ec2", "eu-west-1", "small")
    assert on_demand is not None and on_demand.price_per_hour == 0.02


def test_lookups_by_provider_region_and_name() -> None:
    assert CATALOGUE.get("ec2", "us-east-1", "small") == _offer(
        "small", 1, 2048, 0.01, region="us-east-1"
    )
    assert CATALOGUE.get("ec2", "us-east-1", "big") is None
    names = [o.name for o in CATALOGUE.offerings("ec2", "eu-west-1")]
    assert names == ["small", "small", "narrow", "wide", "big"]  # cheapest first (spot first)
    assert CATALOGUE.offerings("ec2", "nowhere") == ()
    assert CATALOGUE.has_region("ec2", "us-east-1") and not CATALOGUE.has_region("gce", "x")


def test_shipped_catalogue_has_its_date_source_and_the_common_types() -> None:
    shipped = shipped_catalogue()
    assert shipped.date and "indicative" in shipped.source
    for region in ("us-east-1", "eu-west-1"):
        for name in ("t2.micro", "t3.large", "m1.small", "m1.xlarge", "m5.2xlarge", "r5.large"):
            assert shipped.get("ec2", region, name) is not None, (region, name)
    small = shipped.get("ec2", "eu-west-1", "m1.small")
    assert small is not None and (small.vcpu, small.memory_mb) == (1, 1740)
    assert shipped.get("ec2", "eu-west-1", "m1.small", spot=True) is None
    m5 = shipped.get("ec2", "us-east-1", "m5.large")
    m5_spot = shipped.get("ec2", "us-east-1", "m5.large", spot=True)
    assert m5 is not None and m5_spot is not None
    assert m5_spot.price_per_hour < m5.price_per_hour
    # Ireland costs more than Virginia for the same type
    m5_eu = shipped.get("ec2", "eu-west-1", "m5.large")
    assert m5_eu is not None and m5_eu.price_per_hour > m5.price_per_hour
    cheapest = shipped.cheapest_fitting("ec2", "us-east-1", 1, 1024)
    assert cheapest is not None and cheapest.name == "t3.micro"


def test_an_override_replaces_and_extends_the_shipped_entries() -> None:
    override = parse_catalogue(
        {
            "date": "2025-01-01",
            "offerings": {
                "ec2": {
                    "eu-west-1": {"m5.large": {"vcpu": 2, "memory_mb": 8192, "price_per_hour": 1}}
                },
                "gce": {
                    "europe-west1": {
                        "e2-small": {"vcpu": 2, "memory_mb": 2048, "price_per_hour": 0.02}
                    }
                },
            },
        }
    )
    merged = shipped_catalogue().updated(override)
    m5 = merged.get("ec2", "eu-west-1", "m5.large")
    assert m5 is not None and m5.price_per_hour == 1.0
    assert merged.get("gce", "europe-west1", "e2-small") is not None
    assert merged.get("ec2", "us-east-1", "t2.micro") is not None
    assert merged.date == "2025-01-01"


def _one(**entry: Any) -> dict[str, Any]:
    """A document with one entry, ec2/eu-west-1/x.big."""
    return {"offerings": {"ec2": {"eu-west-1": {"x.big": entry}}}}


_OK = {"vcpu": 2, "memory_mb": 8, "price_per_hour": 1}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            _one(**{**_OK, "vcpu": 0}),
            "ec2/eu-west-1/x.big: vcpu must be a whole number >= 1, got 0",
        ),
        (_one(**{**_OK, "vcpu": True}), "ec2/eu-west-1/x.big: vcpu must be a whole number"),
        (
            _one(**{**_OK, "memory_mb": "8G"}),
            "x.big: memory_mb must be a whole number >= 1, got '8G'",
        ),
        (_one(**{**_OK, "price_per_hour": -1}), "x.big: price_per_hour must not be negative"),
        (_one(vcpu=2, memory_mb=8), "ec2/eu-west-1/x.big: price_per_hour must be a number"),
        (_one(**_OK, spot_price_per_hour="cheap"), "x.big: spot_price_per_hour must be a number"),
        (_one(**_OK, gpu=1), "ec2/eu-west-1/x.big: unknown key 'gpu'"),
        ({"offerings": {"ec2": {"eu-west-1": {"x.big": [2, 8, 1]}}}}, "x.big: expected a mapping"),
        ({"offerings": {"ec2": ["eu-west-1"]}}, "catalogue ec2: expected a mapping of region"),
        ({"prices": {}}, "catalogue: unknown key 'prices'"),
    ],
)
def test_parse_errors_name_the_entry(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_catalogue(document)
    assert message in str(caught.value)


def test_a_later_entry_with_the_same_key_replaces_the_earlier() -> None:
    catalogue = Catalogue([_offer("a", 1, 1024, 0.5), _offer("a", 1, 1024, 0.1)])
    assert len(catalogue) == 1
    assert [o.price_per_hour for o in catalogue] == [0.1]
