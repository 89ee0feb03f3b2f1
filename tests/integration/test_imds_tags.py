"""Instance tags over real HTTP: the IMDSv2 client against the rig's fake IMDS on loopback,
with tags exposed (InstanceMetadataTags=enabled) and without (404, like EC2)."""
from __future__ import annotations

from dnscache_agent.imds import ImdsClient
from dnscache_agent.settings import MetricsSettings
from dnscache_agent.sinks.cloudwatch import resolve_fleet
from rig.fake_imds import FakeImds, ImdsFacts, facts_json

TAGS = (("aws:autoscaling:groupName", "asg-web-1"), ("Name", "web 1"))


def test_fleet_name_from_the_instance_tag() -> None:
    with FakeImds.serve(facts=ImdsFacts(tags=TAGS)) as imds:
        client = ImdsClient(imds.url, timeout=2.0)
        assert client.instance_tag("aws:autoscaling:groupName") == "asg-web-1"
        assert client.instance_tag("Name") == "web 1"
        assert client.instance_tag("absent") is None
        metrics = MetricsSettings(fleet_tag="aws:autoscaling:groupName")
        assert resolve_fleet(metrics, client.instance_tag) == "asg-web-1"
        assert imds.requests("PUT") == 1  # one token for every read
        assert imds.requests("GET", "/latest/meta-data/tags/instance/"
                                    "aws:autoscaling:groupName") == 2
        assert client.get("tags/instance/") == "aws:autoscaling:groupName\nName"


def test_tags_not_exposed_answer_404_and_give_no_fleet() -> None:
    with FakeImds.serve() as imds:
        client = ImdsClient(imds.url, timeout=2.0)
        assert client.get("tags/instance/") is None
        assert client.instance_tag("aws:autoscaling:groupName") is None
        assert resolve_fleet(MetricsSettings(fleet_tag="aws:autoscaling:groupName"),
                             client.instance_tag) is None


def test_tags_survive_the_facts_json_round_trip() -> None:
    import json

    facts = ImdsFacts(tags=TAGS)
    assert ImdsFacts.from_dict(json.loads(facts_json(facts))) == facts
