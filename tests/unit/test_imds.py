"""The IMDSv2 client against an injected fake session: token first, the token on every GET,
short timeouts, and a clean None off EC2. No socket is opened (the unit guard would fail it)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from dnscache_agent.imds import Ec2Interface, ImdsClient

BASE = "http://imds.test"
MAC0, MAC1 = "0e:00:00:00:00:01", "0e:00:00:00:00:02"
METADATA = {
    "instance-id": "i-0123456789abcdef0",
    "instance-type": "c6in.large",
    "placement/region": "eu-west-1",
    "placement/availability-zone": "eu-west-1b",
    "network/interfaces/macs/": f"{MAC1}/\n{MAC0}/",
    f"network/interfaces/macs/{MAC0}/device-number": "0",
    f"network/interfaces/macs/{MAC0}/interface-id": "eni-0",
    f"network/interfaces/macs/{MAC0}/vpc-id": "vpc-1",
    f"network/interfaces/macs/{MAC0}/vpc-ipv4-cidr-blocks": "10.1.0.0/16\n100.64.0.0/16",
    f"network/interfaces/macs/{MAC1}/device-number": "1",
    f"network/interfaces/macs/{MAC1}/interface-id": "eni-1",
    f"network/interfaces/macs/{MAC1}/vpc-id": "vpc-1",
    # Older IMDS: only the singular key.
    f"network/interfaces/macs/{MAC1}/vpc-ipv4-cidr-block": "10.1.0.0/16",
}


def response(status: int, text: str = "") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = text.encode()
    r._content_consumed = True  # a body already read: iter_content() slices it
    r.url = BASE
    return r


class FakeImds(requests.Session):
    """Answers like IMDSv2: PUT a token, then GETs carrying it; 401 without it."""

    def __init__(self, metadata: dict[str, str] | None = None, *, token_status: int = 200,
                 fail: type[Exception] | None = None) -> None:
        super().__init__()
        self.metadata = METADATA if metadata is None else metadata
        self.token_status = token_status
        self.fail = fail
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def put(self, url: Any, data: Any = None, **kw: Any) -> requests.Response:
        self.calls.append(("PUT", url, kw.get("headers", {}), kw.get("timeout")))
        if self.fail:
            raise self.fail("no route to host")
        assert url == BASE + "/latest/api/token"
        assert "X-aws-ec2-metadata-token-ttl-seconds" in kw["headers"]
        return response(self.token_status, "TOKEN" if self.token_status == 200 else "")

    def get(self, url: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
        headers = kw.get("headers", {})
        self.calls.append(("GET", url, headers, kw.get("timeout")))
        if headers.get("X-aws-ec2-metadata-token") != "TOKEN":
            return response(401)
        path = url.removeprefix(BASE + "/latest/meta-data/")
        if path not in self.metadata:
            return response(404, "<html>Not Found</html>")
        return response(200, self.metadata[path])


def test_fetch_reads_instance_and_interfaces() -> None:
    session = FakeImds()
    facts = ImdsClient(BASE + "/", timeout=0.5, session=session).fetch()
    assert facts is not None
    assert (facts.instance_id, facts.instance_type, facts.region, facts.availability_zone) == (
        "i-0123456789abcdef0", "c6in.large", "eu-west-1", "eu-west-1b")
    assert [i.mac for i in facts.interfaces] == [MAC0, MAC1]  # by device number
    eth0, eth1 = facts.interfaces
    assert eth0.vpc_cidrs == ("10.1.0.0/16", "100.64.0.0/16")
    assert eth0.vpc_resolver == "10.1.0.2"
    assert eth1.vpc_cidrs == ("10.1.0.0/16",) and eth1.interface_id == "eni-1"
    # One token for the whole fetch, then every GET carries it, all with the short timeout.
    assert [c[0] for c in session.calls].count("PUT") == 1
    assert session.calls[0][0] == "PUT"
    assert all(c[3] == 0.5 for c in session.calls)


@pytest.mark.parametrize("error", [requests.ConnectionError, requests.Timeout])
def test_no_answer_is_not_ec2(error: type[Exception]) -> None:
    session = FakeImds(fail=error)
    assert ImdsClient(BASE, session=session).fetch() is None
    assert len(session.calls) == 1  # gave up at once, no retries


@pytest.mark.parametrize("status", [403, 404, 405])
def test_imdsv2_refused_is_not_ec2(status: int) -> None:
    assert ImdsClient(BASE, session=FakeImds(token_status=status)).fetch() is None


def test_no_instance_id_is_not_ec2() -> None:
    assert ImdsClient(BASE, session=FakeImds({})).fetch() is None


def test_garbage_is_not_ec2_and_not_an_exception() -> None:
    bad = dict(METADATA)
    bad[f"network/interfaces/macs/{MAC0}/device-number"] = "eth0"
    assert ImdsClient(BASE, session=FakeImds(bad)).fetch() is None


def test_missing_optional_values_are_empty() -> None:
    facts = ImdsClient(BASE, session=FakeImds({"instance-id": "i-1"})).fetch()
    assert facts is not None
    assert (facts.instance_type, facts.region, facts.interfaces) == ("", "", ())


@pytest.mark.parametrize(("cidrs", "resolver"), [
    (("172.31.0.0/16",), "172.31.0.2"),
    (("10.0.16.0/20", "10.1.0.0/16"), "10.0.16.2"),
    (("10.0.16.7/20",), "10.0.16.2"),   # host bits tolerated
    ((), None),
    (("not-a-cidr",), None),            # a bad answer must not crash planning later
])
def test_vpc_resolver_is_base_plus_two(cidrs: tuple[str, ...], resolver: str | None) -> None:
    assert Ec2Interface("m", 0, "eni", "vpc", cidrs).vpc_resolver == resolver


def test_default_endpoint_is_never_used_by_tests() -> None:
    import os

    assert os.environ["DNSCACHE_AGENT_IMDS_ENDPOINT"].startswith("http://127.0.0.1")


def test_instance_tag_read_with_the_token_and_absent_as_none() -> None:
    tags = {"tags/instance/aws:autoscaling:groupName": "asg-web",
            "tags/instance/Team%20Name": "dns"}
    session = FakeImds({**METADATA, **tags})
    client = ImdsClient(BASE, session=session)
    assert client.instance_tag("aws:autoscaling:groupName") == "asg-web"
    assert client.instance_tag("Team Name") == "dns"  # quoted in the path
    assert client.instance_tag("missing") is None
    assert [c[0] for c in session.calls].count("PUT") == 1
    assert ImdsClient(BASE, session=FakeImds(fail=requests.ConnectionError)).instance_tag(
        "aws:autoscaling:groupName") is None


def test_an_oversized_answer_is_not_ec2_and_not_read_whole() -> None:
    """Anything local can listen where IMDS is expected (a test endpoint, a proxy): a body
    over the cap is refused, not buffered."""
    huge = "i-" + "0" * (70 * 1024)
    session = FakeImds({**METADATA, "instance-id": huge})
    assert ImdsClient(BASE, timeout=0.5, session=session).fetch() is None
