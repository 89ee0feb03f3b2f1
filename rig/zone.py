"""Generated zones for the authoritative server behind the simulated Amazon resolver.

Pure: values in, zone text out. The same `ZoneSpec` also lists the workload records
(name, type, TTL), so a benchmark can compute the compulsory minimum of upstream queries
(each distinct name/type must be fetched at least once per TTL).

Addresses in the records are data only, never contacted: A records use 198.18.0.0/15
(RFC 2544 benchmarking) and AAAA records 2001:db8::/32 (RFC 3849 documentation).
"""
from __future__ import annotations

from dataclasses import dataclass

# bind 9.18's default max-udp-size / edns-udp-size; the big TXT answer must exceed it.
BIND_DEFAULT_UDP_SIZE = 1232

NOERROR = "NOERROR"
NXDOMAIN = "NXDOMAIN"
NODATA = "NODATA"


@dataclass(frozen=True)
class ZoneSpec:
    """What the test zone holds. `origin` must be absolute (end with a dot)."""

    origin: str = "vpc.test."
    hosts: int = 10000
    ttls: tuple[int, ...] = (5, 60, 300)
    aaaa_every: int = 10  # every Nth host also has an AAAA record
    negative_ttl: int = 30  # SOA minimum and SOA TTL: how long NXDOMAIN/NODATA are cached
    special_ttl: int = 60  # TTL of the CNAME chain, MX, TXT, SRV records
    big_txt_strings: int = 8  # 8 x 200 bytes: ~1.6 kB, above 1232 so UDP answers are truncated
    nxdomain_names: int = 100  # workload names that do not exist
    serial: int = 1

    def __post_init__(self) -> None:
        if not self.origin.endswith("."):
            raise ValueError(f"ZoneSpec.origin must end with a dot: {self.origin!r}")
        if self.hosts < 1 or not self.ttls or self.aaaa_every < 1:
            raise ValueError("ZoneSpec needs hosts >= 1, at least one TTL and aaaa_every >= 1")


@dataclass(frozen=True)
class WorkloadRecord:
    """One query of the workload and what the authoritative server answers to it.

    `ttl` is how long a cache may keep the answer (the negative TTL for NXDOMAIN/NODATA,
    the smallest TTL along a CNAME chain), `outcome` is NOERROR, NODATA or NXDOMAIN.
    """

    name: str
    rtype: str
    ttl: int
    outcome: str = NOERROR


def host_label(index: int) -> str:
    """Label of host number `index` (h0, h1, ...)."""
    return f"h{index}"


def host_ttl(spec: ZoneSpec, index: int) -> int:
    """TTL of host `index`: the spec's TTLs in turn (5, 60, 300, 5, ...)."""
    return spec.ttls[index % len(spec.ttls)]


def host_ipv4(index: int) -> str:
    """A record data for host `index`, inside 198.18.0.0/15."""
    if not 0 <= index < 2 * 65536:
        raise ValueError(f"host index out of range for 198.18.0.0/15: {index}")
    return f"198.{18 + index // 65536}.{(index // 256) % 256}.{index % 256}"


def host_ipv6(index: int) -> str:
    """AAAA record data for host `index`, inside 2001:db8::/32."""
    return f"2001:db8::{index:x}"


def has_aaaa(spec: ZoneSpec, index: int) -> bool:
    """Whether host `index` carries an AAAA record (others answer NODATA to AAAA)."""
    return index % spec.aaaa_every == 0


def big_txt_strings(spec: ZoneSpec) -> list[str]:
    """The character strings of the big TXT RRset (deterministic, 200 bytes each)."""
    return [f"chunk{i:02d}-" + ("x" * 192) for i in range(spec.big_txt_strings)]


def fqdn(spec: ZoneSpec, label: str) -> str:
    """Absolute name of `label` in the zone ("@" is the apex)."""
    return spec.origin if label == "@" else f"{label}.{spec.origin}"


def _soa(spec: ZoneSpec) -> list[str]:
    return [
        f"$ORIGIN {spec.origin}",
        f"$TTL {spec.negative_ttl}",
        f"@ {spec.negative_ttl} IN SOA ns1 hostmaster {spec.serial} 3600 600 86400 "
        f"{spec.negative_ttl}",
        f"@ {spec.negative_ttl} IN NS ns1",
        "ns1 300 IN A 169.254.169.253",
    ]


def render_zone(spec: ZoneSpec) -> str:
    """Zone file text: hosts, CNAME chain, MX, TXT, SRV, big TXT and a NODATA name."""
    t = spec.special_ttl
    lines = _soa(spec)
    lines += [
        f"cname1 {t} IN CNAME cname2",
        f"cname2 {t} IN CNAME cname3",
        f"cname3 {t} IN CNAME cname-target",
        f"cname-target {t} IN A 198.19.255.1",
        f"@ {t} IN MX 10 mail",
        f"mail {t} IN A 198.19.255.2",
        f'txt {t} IN TXT "v=rig1 small text record"',
        f"_dns._udp {t} IN SRV 10 5 53 ns1",
        f"_sip._tcp {t} IN SRV 20 10 5060 mail",
        "bigtxt {} IN TXT {}".format(t, " ".join(f'"{s}"' for s in big_txt_strings(spec))),
        f"nodata {t} IN A 198.19.255.3",
    ]
    for i in range(spec.hosts):
        label, ttl = host_label(i), host_ttl(spec, i)
        lines.append(f"{label} {ttl} IN A {host_ipv4(i)}")
        if has_aaaa(spec, i):
            lines.append(f"{label} {ttl} IN AAAA {host_ipv6(i)}")
    return "\n".join(lines) + "\n"


def special_records(spec: ZoneSpec) -> list[WorkloadRecord]:
    """The fixed names of the zone, one query each, with the expected outcome."""
    t, neg = spec.special_ttl, spec.negative_ttl
    return [
        WorkloadRecord(fqdn(spec, "cname1"), "A", t),
        WorkloadRecord(fqdn(spec, "@"), "MX", t),
        WorkloadRecord(fqdn(spec, "txt"), "TXT", t),
        WorkloadRecord(fqdn(spec, "_sip._tcp"), "SRV", t),
        WorkloadRecord(fqdn(spec, "bigtxt"), "TXT", t),
        WorkloadRecord(fqdn(spec, "nodata"), "AAAA", neg, NODATA),
    ]


def workload_records(
    spec: ZoneSpec, *, with_aaaa: bool = True, with_special: bool = True,
    with_nxdomain: bool = True,
) -> list[WorkloadRecord]:
    """All distinct (name, type) pairs a benchmark may query, with TTL and outcome.

    Hosts first (A, then AAAA for every host when `with_aaaa`: NODATA for those without
    one), then the special names, then `nxdomain_names` names that do not exist.
    """
    out: list[WorkloadRecord] = []
    for i in range(spec.hosts):
        name, ttl = fqdn(spec, host_label(i)), host_ttl(spec, i)
        out.append(WorkloadRecord(name, "A", ttl))
        if with_aaaa:
            if has_aaaa(spec, i):
                out.append(WorkloadRecord(name, "AAAA", ttl))
            else:
                out.append(WorkloadRecord(name, "AAAA", spec.negative_ttl, NODATA))
    if with_special:
        out.extend(special_records(spec))
    if with_nxdomain:
        out.extend(
            WorkloadRecord(fqdn(spec, f"nx{i}"), "A", spec.negative_ttl, NXDOMAIN)
            for i in range(spec.nxdomain_names)
        )
    return out


@dataclass(frozen=True)
class SearchZoneSpec:
    """The instance's search domain (like EC2's `ec2.internal.`), so `dig +search` works."""

    origin: str = "ec2.internal."
    instance_ip: str = "169.254.100.2"
    ttl: int = 60
    negative_ttl: int = 30
    names: tuple[tuple[str, str], ...] = (("web", "198.19.254.1"), ("db", "198.19.254.2"))


def instance_hostname(ip: str) -> str:
    """EC2-style host label for an IPv4 address: 169.254.100.2 -> ip-169-254-100-2."""
    return "ip-" + ip.replace(".", "-")


def render_search_zone(spec: SearchZoneSpec) -> str:
    """Zone text for the search domain: the instance's own ip-a-b-c-d name plus `names`."""
    lines = [
        f"$ORIGIN {spec.origin}",
        f"$TTL {spec.negative_ttl}",
        f"@ {spec.negative_ttl} IN SOA ns1 hostmaster 1 3600 600 86400 {spec.negative_ttl}",
        f"@ {spec.negative_ttl} IN NS ns1",
        "ns1 300 IN A 169.254.169.253",
        f"{instance_hostname(spec.instance_ip)} {spec.ttl} IN A {spec.instance_ip}",
    ]
    lines += [f"{label} {spec.ttl} IN A {addr}" for label, addr in spec.names]
    return "\n".join(lines) + "\n"
