"""bench/budget_fixes.py's pure parts: each arm's stub resolv.conf and named config (the
agent's own rendering), ratios against the same run's baseline, and the generated doc block."""
from __future__ import annotations

from pathlib import Path

from bench.budget_fixes import (
    ARMS,
    DOC_BEGIN,
    DOC_END,
    ArmResult,
    named_conf,
    render_doc,
    resolv_conf,
    with_doc,
    with_ratios,
)


def test_arms_resolv_conf_and_named_conf() -> None:
    assert "options ndots:5 timeout:1 attempts:2" in resolv_conf(ARMS["baseline"])
    assert "search ns1.svc.cluster.local svc.cluster.local cluster.local" in resolv_conf(
        ARMS["baseline"])
    assert "options ndots:5 no-aaaa" in resolv_conf(ARMS["no_aaaa"])
    assert "options ndots:1 " in resolv_conf(ARMS["ndots_1"])
    base = named_conf(ARMS["baseline"], Path("/tmp/w"))
    assert 'directory "/tmp/w";' in base and 'pid-file "/tmp/w/named.pid";' in base
    assert "127.0.0.1 port 5354;" in base and "filter-aaaa" not in base
    assert "min-ncache-ttl" not in base
    both = named_conf(ARMS["safe_settings"], Path("/tmp/w"))
    assert 'plugin query "filter-aaaa.so"' in both and "\tmin-ncache-ttl 90;\n" in both


def result(arm: str, steady: float) -> ArmResult:
    return ArmResult(arm, ARMS[arm].title, ARMS[arm].applied_by_agent, 20.0, 100, 5.0, 14.0,
                     int(steady * 14), steady, 0, 6000, 0, 300.0, {"other": 3.0}, [])


def test_ratios_and_doc_block() -> None:
    results = with_ratios([result("baseline", 400.0), result("min_ncache_ttl", 100.0)])
    assert results[0].ratio_to_baseline == 1.0 and results[1].ratio_to_baseline == 0.25
    meta = {"date": "d", "host": "h", "names": 300, "qps": 300.0, "seconds": 20.0,
            "settle": 6.0}
    block = render_doc(results, meta)
    assert block.startswith(DOC_BEGIN) and block.rstrip().endswith(DOC_END)
    assert "| [cache] min_ncache_ttl = 90 | agent setting | 100 | 0.25x |" in block
    doc = with_doc("# title\n\nprose\n", block)
    assert doc.startswith("# title\n\nprose\n\n" + DOC_BEGIN)
    again = with_doc(doc + "after\n", render_doc(results[:1], meta))
    assert again.count(DOC_BEGIN) == 1 and "min_ncache_ttl = 90 |" not in again
    assert again.endswith("after\n")
