"""The top file between the pacer's tally and `dnscache-agent top`: written atomically, bounded,
read back defensively (stale or missing = no pacer), and `top` naming each class's fix against
the host's own settings (issue 13, section 2)."""
from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnscache_agent import cli
from dnscache_agent.pacer import wire
from dnscache_agent.stats.top import (
    AAAA_NODATA,
    REPEATED_NXDOMAIN,
    SEARCH_NXDOMAIN,
    TCP_FALLBACK,
    FixContext,
    SearchPolicy,
    TopTally,
    UpstreamQuestion,
    fixes,
    with_fixes,
)
from dnscache_agent.stats.top_file import (
    MAX_BYTES,
    TopFeed,
    TopFileError,
    parse,
    read_top,
    top_path,
)

T0 = 1_800_000_000.0
ROOTS = Path(__file__).resolve().parent.parent / "fixtures" / "roots"
RESOLV = "nameserver 127.0.0.1\nsearch svc.cluster.local ec2.internal\noptions ndots:5\n"


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def exchange(name: str, qtype: str = "A", *, rcode: int = 0, answers: int = 1,
             tc: bool = False) -> tuple[bytes, bytes]:
    """A pacer question key and the upstream answer for it."""
    query = dns.message.make_query(name, qtype)
    parsed = wire.parse_query(query.to_wire())
    assert parsed is not None
    r = dns.message.make_response(query)
    r.set_rcode(rcode)
    if answers and rcode == 0 and not tc:
        r.answer.append(dns.rrset.from_text(name, 300, "IN", qtype,
                                            "192.0.2.1" if qtype == "A" else "2001:db8::1"))
    else:
        r.authority.append(dns.rrset.from_text("example.com.", 300, "IN", "SOA",
                                               "ns. host. 1 2 3 4 60"))
    if tc:
        r.flags |= dns.flags.TC
    return parsed.key, r.to_wire()


def feed(tmp_path: Path, clock: Clock, writes: list[bytes] | None = None) -> TopFeed:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(RESOLV)

    def write(path: Path, data: bytes) -> None:
        if writes is not None:
            writes.append(data)
        path.write_bytes(data)

    return TopFeed(tmp_path / "top.json", limit_pps=1000, resolv_conf=resolv, clock=clock,
                   write=write)


def test_feed_classifies_answers_with_the_resolv_conf_search_list(tmp_path: Path) -> None:
    clock = Clock()
    f = feed(tmp_path, clock)
    assert f.tally.policy == SearchPolicy(("svc.cluster.local", "ec2.internal"), 5)
    for i in range(30):
        clock.t = T0 + i
        f.answered(*exchange("api.example.com.svc.cluster.local.", rcode=3))
        f.answered(*exchange(f"v4-{i}.example.com.", "AAAA", answers=0))
        f.answered(*exchange("v4-0.example.com.", "AAAA", answers=0))
    big, tc_answer = exchange("big.example.com.", "TXT", tc=True)
    f.answered(big, tc_answer)  # the truncated UDP answer: first packet of the fallback
    f.answered(big, exchange("big.example.com.", "TXT")[1], tcp=True, packets=5)
    f.answered(*exchange("lost.example.com."))
    f.answered(b"\x01", None)  # malformed keys are skipped, never raised
    assert f.publish()
    top = read_top(tmp_path / "top.json", now=clock.t)
    assert top is not None and set(top.reports) == {"minute", "hour"}
    m = top.reports["minute"]
    by = {c.klass: c for c in m.classes}
    assert by[AAAA_NODATA].packets == 60 and by[SEARCH_NXDOMAIN].packets == 30
    assert by[TCP_FALLBACK].packets == 6
    assert m.top[0].name == "v4-0.example.com" and m.top[0].packets == 31
    assert top.policy.ndots == 5 and top.limit_pps == 1000


def test_publish_is_at_most_once_a_second_and_bounded(tmp_path: Path) -> None:
    clock = Clock()
    writes: list[bytes] = []
    f = feed(tmp_path, clock, writes)
    assert f.publish() and not f.publish()
    clock.t += 1.0
    assert f.publish() and len(writes) == 2
    key, answer = exchange(f"{'x' * 60}.{'y' * 60}.{'z' * 60}.example.com.")
    for i in range(300):  # many long names: the file keeps 20 per window
        f.answered(key[:2] + bytes([4]) + f"n{i:03d}".encode() + key[2:], answer)
    assert f.publish(force=True)
    assert len(writes[-1]) < MAX_BYTES / 2
    doc = json.loads(writes[-1])
    assert len(doc["windows"]["minute"]["top"]) == 20


def test_the_pacers_own_tally_on_its_loop_clock(tmp_path: Path) -> None:
    """In the pacer, its `Tally` feeds the `TopTally` with loop (monotonic) time; the feed
    only publishes, stamping the file with wall-clock time."""
    tally = TopTally(SearchPolicy(("ec2.internal",), 5), limit_pps=500)
    for i in range(10):
        tally.observe(UpstreamQuestion("typo.example.com", "A", 3), 100.0 + i)
    f = TopFeed(tmp_path / "top.json", limit_pps=999, tally=tally, clock=lambda: 110.0,
                wallclock=lambda: T0)
    assert f.publish(110.0)
    top = read_top(tmp_path / "top.json", now=T0 + 1)
    assert top is not None and top.time == T0 and top.limit_pps == 500
    assert top.reports["minute"].packets == 10 and top.policy.search == ("ec2.internal",)
    assert top.reports["minute"].top[0].klass == REPEATED_NXDOMAIN


def test_remove_and_stale_mean_no_pacer(tmp_path: Path) -> None:
    clock = Clock(time.time())
    f = feed(tmp_path, clock)
    f.publish()
    assert read_top(f.path) is not None
    assert read_top(f.path, now=clock.t + 6) is None  # not rewritten for 5 s
    f.remove()
    f.remove()  # twice is fine
    assert read_top(f.path) is None


@pytest.mark.parametrize("data", [
    b"", b"[]", b'{"version": 2}', b"\xff",
    b'{"version": 1, "time": 1, "limit_pps": 1024, "search": [1], "ndots": 1, '
    b'"short_ttl": 30, "windows": {}}',
    b'{"version": 1, "time": "x", "limit_pps": 1024, "search": [], "ndots": 1, '
    b'"short_ttl": 30, "windows": {}}',
    b'{"version": 1, "time": 1, "limit_pps": 1024, "search": [], "ndots": 1, '
    b'"short_ttl": 30, "windows": {"minute": []}}',
])
def test_malformed_files_are_one_line_errors(data: bytes) -> None:
    with pytest.raises(TopFileError) as err:
        parse(data, "/run/x/top.json")
    assert str(err.value).startswith("/run/x/top.json: ") and "\n" not in str(err.value)


def test_oversized_file() -> None:
    with pytest.raises(TopFileError, match="larger than"):
        read_top(io.BytesIO(b" " * (MAX_BYTES + 1)))


def test_top_path_is_next_to_the_stats_file() -> None:
    assert top_path(Path("/run/dnscache-agent-pacer/stats.json")) == Path(
        "/run/dnscache-agent-pacer/top.json")


def test_fixes_name_what_the_host_still_lacks() -> None:
    policy = SearchPolicy(("ec2.internal",), 5)
    fresh = fixes(policy)
    assert fresh[REPEATED_NXDOMAIN].setting == "[cache] min_ncache_ttl = 90"
    assert fresh[AAAA_NODATA].setting == "[cache] min_ncache_ttl = 90"
    assert "options no-aaaa" in fresh[AAAA_NODATA].text
    assert fresh[SEARCH_NXDOMAIN].setting == "resolv.conf: options ndots:1"
    done = fixes(policy, context=FixContext(min_ncache_ttl=90, filter_aaaa=False))
    assert done[REPEATED_NXDOMAIN].setting is None
    assert "already at its 90 s maximum" in done[REPEATED_NXDOMAIN].text
    # measured: the plugin saves no upstream packet, so it is never this class's fix
    assert done[AAAA_NODATA].setting is None
    assert "does not stop named asking upstream" in done[AAAA_NODATA].text
    assert "already at its maximum" in done[AAAA_NODATA].text
    old_bind = fixes(policy, context=FixContext(filter_aaaa_available=False))
    assert "filter_aaaa" not in old_bind[AAAA_NODATA].text
    t = TopTally(policy)
    t.observe(UpstreamQuestion("typo.example.com", "A", 3), T0)
    t.observe(UpstreamQuestion("typo.example.com", "A", 3), T0)
    first = {c.klass: c for c in t.report("minute", T0 + 1).classes}[REPEATED_NXDOMAIN]
    assert first.setting == "[cache] min_ncache_ttl = 90"
    redone = with_fixes(t.report("minute", T0 + 1), policy, context=FixContext(
        min_ncache_ttl=90))
    assert {c.klass: c for c in redone.classes}[REPEATED_NXDOMAIN].setting is None


def test_top_command_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    shutil.copytree(ROOTS / "dhclient-debian12", root, symlinks=True)
    clock = Clock(time.time())
    run_dir = root / "run/dnscache-agent-pacer"
    run_dir.mkdir(parents=True)
    f = TopFeed(run_dir / "top.json", limit_pps=1024, clock=clock)
    for _ in range(50):
        f.answered(*exchange("typo.example.com.", rcode=3))
    f.publish()
    (tmp_path / "agent.toml").write_text("[cache]\nmin_ncache_ttl = 30\n")
    code = cli.main(["top", "--root", str(root), "--config", str(tmp_path / "agent.toml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("last minute (")
    assert any(line.startswith("repeated-nxdomain") and "[cache] min_ncache_ttl = 90" in line
               for line in out.splitlines())
    code = cli.main(["top", "--root", str(root), "--json", "--window", "hour"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["window"] == "hour" and doc["packets"] == 50
    assert doc["top"][0]["name"] == "typo.example.com" and doc["top"][0]["packets"] == 50
    (run_dir / "top.json").unlink()
    code = cli.main(["top", "--root", str(root)])
    err = capsys.readouterr().err
    assert code == 1 and "the pacer, which tallies upstream questions, is not running" in err
    assert len(err.splitlines()) == 1
