"""EC2 instance facts over IMDSv2: a token PUT, then a few GETs, all with short timeouts. Off EC2
(no answer, refused, 404) the result is a clean `None`, never an exception or a long hang."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

import requests

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
META = "/latest/meta-data/"
#: Instance tags, when the instance's metadata options expose them (InstanceMetadataTags).
TAGS = "tags/instance/"


@dataclass(frozen=True)
class Ec2Interface:
    mac: str
    device_number: int
    interface_id: str
    vpc_id: str
    vpc_cidrs: tuple[str, ...]

    @property
    def vpc_resolver(self) -> str | None:
        """The VPC base + 2 resolver address of the interface's primary VPC CIDR."""
        if not self.vpc_cidrs:
            return None
        try:
            net = ipaddress.ip_network(self.vpc_cidrs[0], strict=False)
        except ValueError:  # IMDS answered something that is not a CIDR: no fallback
            return None
        return str(net.network_address + 2)


@dataclass(frozen=True)
class Ec2Facts:
    instance_id: str
    instance_type: str
    region: str
    availability_zone: str
    interfaces: tuple[Ec2Interface, ...]


#: IMDS answers are short (an instance id, a list of MACs); anything larger is not IMDS.
MAX_BODY_BYTES = 64 * 1024


class ImdsClient:
    """A minimal IMDSv2 client. `session` is injectable for tests; `endpoint` is configurable so
    tests point it at a fake server on loopback."""

    def __init__(self, endpoint: str, timeout: float = 1.0,
                 session: requests.Session | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self._token: str | None = None

    def _body(self, resp: requests.Response) -> str:
        """The body, read within MAX_BODY_BYTES and one total deadline: requests' timeout is
        per read, so a local process posing as IMDS could drip bytes forever."""
        deadline = time.monotonic() + self.timeout * 2
        data = bytearray()
        try:
            for chunk in resp.iter_content(4096):
                data += chunk
                if len(data) > MAX_BODY_BYTES:
                    raise ValueError(f"IMDS answer over {MAX_BODY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"IMDS answer not complete within {self.timeout * 2:g}s")
        finally:
            resp.close()
        return data.decode("utf-8", errors="replace").strip()

    def _get_token(self) -> str:
        resp = self.session.put(
            self.endpoint + TOKEN_PATH,
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
            timeout=self.timeout, stream=True,
        )
        resp.raise_for_status()
        return self._body(resp)

    def get(self, path: str) -> str | None:
        """GET a meta-data path; None on 404."""
        if self._token is None:
            self._token = self._get_token()
        resp = self.session.get(
            self.endpoint + META + path,
            headers={"X-aws-ec2-metadata-token": self._token},
            timeout=self.timeout, stream=True,
        )
        if resp.status_code == 404:
            resp.close()
            return None
        resp.raise_for_status()
        return self._body(resp)

    def instance_tag(self, key: str) -> str | None:
        """The value of the instance tag `key`, read from IMDS. None when the instance does
        not expose its tags in IMDS (404), has no such tag, or IMDS does not answer: the
        caller decides what a missing tag means, this never raises."""
        try:
            value = self.get(TAGS + quote(key, safe=":@+=._-"))
        except (requests.RequestException, ValueError) as exc:
            log.debug("IMDS tag %r at %s not readable: %s", key, self.endpoint, exc)
            return None
        return value or None

    def fetch(self) -> Ec2Facts | None:
        """All instance facts, or None when this is not EC2 (or IMDS does not answer)."""
        try:
            return self._fetch()
        except (requests.RequestException, ValueError) as exc:
            log.debug("IMDS at %s not usable: %s", self.endpoint, exc)
            return None

    def _fetch(self) -> Ec2Facts | None:
        instance_id = self.get("instance-id")
        if not instance_id:
            return None
        interfaces = []
        for line in (self.get("network/interfaces/macs/") or "").splitlines():
            mac = line.strip().rstrip("/")
            if not mac:
                continue
            base = f"network/interfaces/macs/{mac}/"
            cidrs = (self.get(base + "vpc-ipv4-cidr-blocks")
                     or self.get(base + "vpc-ipv4-cidr-block"))
            interfaces.append(Ec2Interface(
                mac=mac,
                device_number=int(self.get(base + "device-number") or 0),
                interface_id=self.get(base + "interface-id") or "",
                vpc_id=self.get(base + "vpc-id") or "",
                vpc_cidrs=tuple((cidrs or "").split()),
            ))
        interfaces.sort(key=lambda i: i.device_number)
        return Ec2Facts(
            instance_id=instance_id,
            instance_type=self.get("instance-type") or "",
            region=self.get("placement/region") or "",
            availability_zone=self.get("placement/availability-zone") or "",
            interfaces=tuple(interfaces),
        )
