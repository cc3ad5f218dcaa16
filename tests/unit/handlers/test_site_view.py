"""EdgeSite membership for every site at once (one label index) gives what a pass per site gave."""

from __future__ import annotations

import random

from edgeweave.api.edgesite import EdgeSiteSpec
from edgeweave.handlers.site_view import build_view
from edgeweave.placement.inventory import Device
from edgeweave.placement.sites import site_devices, site_members, site_of_devices


def fleet(seed: int) -> tuple[list[Device], dict[str, EdgeSiteSpec]]:
    rnd = random.Random(seed)
    devices = [Device(name=f"d{i:03d}", labels={"site": f"s{rnd.randrange(6)}", "zone": rnd.choice("ab"),
                                                 **({"gpu": "yes"} if rnd.random() < 0.3 else {})})
               for i in range(120)]
    sites = {f"s{i}": EdgeSiteSpec.model_validate({"nodeSelector": {"site": f"s{i}"}}) for i in range(6)}
    # overlaps and the other shapes: two-key selector, names only, names plus selector, matches nothing
    sites["gpu-a"] = EdgeSiteSpec.model_validate({"nodeSelector": {"gpu": "yes", "zone": "a"}})
    sites["named"] = EdgeSiteSpec.model_validate({"nodeNames": ["d001", "d002", "missing"]})
    sites["both"] = EdgeSiteSpec.model_validate({"nodeSelector": {"site": "s5"}, "nodeNames": ["d003"]})
    sites["none"] = EdgeSiteSpec.model_validate({"nodeSelector": {"site": "nowhere"}})
    return devices, sites


def test_members_are_what_each_site_selects() -> None:
    for seed in range(5):
        devices, sites = fleet(seed)
        members = site_members(sites, devices)
        assert members == {name: site_devices(spec, devices) for name, spec in sites.items()}


def test_a_device_in_several_sites_belongs_to_the_first_by_name() -> None:
    devices, sites = fleet(1)
    owner = site_of_devices(site_members(sites, devices))
    for d in devices:
        matching = sorted(n for n, spec in sites.items() if d in site_devices(spec, devices))
        assert owner.get(d.name) == (matching[0] if matching else None)


def test_shared_nodes_are_reported_on_both_sides() -> None:
    devices, sites = fleet(2)
    view = build_view(devices, sites, now=0.0)
    for a, spec_a in sites.items():
        for b, spec_b in sites.items():
            both = sorted({d.name for d in site_devices(spec_a, devices)} & {d.name for d in site_devices(spec_b, devices)})
            assert view.shared.get(a, {}).get(b, []) == (both if a != b else [])
    assert view.shared["gpu-a"]  # the two-key selector overlaps the per-site ones
    assert "none" not in view.shared and view.members["none"] == []
