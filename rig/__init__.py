"""Test rig for dnscache-agent (not shipped): a simulated EC2 VPC in network namespaces.

`SimulatedVpc` builds an instance namespace and a vpc namespace holding the Amazon resolver
address 169.254.169.253 (a real authoritative named behind an nftables packets/s limit) and
IMDS 169.254.169.254 (a fake IMDSv2). Pure helpers: `zone`, `workload`, `dnsperf_output`,
`nft`.
"""
from __future__ import annotations

from rig.dnsperf_output import DnsperfResult, parse_dnsperf
from rig.fake_imds import FakeImds, ImdsBehaviour, ImdsFacts, InterfaceFacts
from rig.netns import RigError
from rig.nft import CounterRate, NftCounters
from rig.vpc import DEFAULT_RESOLV_CONF, OverlayProbe, SimulatedVpc, VpcAddresses
from rig.workload import write_queries_file, zipf_queries
from rig.zone import SearchZoneSpec, WorkloadRecord, ZoneSpec, workload_records

__all__ = [
    "DEFAULT_RESOLV_CONF", "CounterRate", "DnsperfResult", "FakeImds", "ImdsBehaviour",
    "ImdsFacts", "InterfaceFacts", "NftCounters", "OverlayProbe", "RigError", "SearchZoneSpec",
    "SimulatedVpc", "VpcAddresses", "WorkloadRecord", "ZoneSpec", "parse_dnsperf",
    "workload_records", "write_queries_file", "zipf_queries",
]
