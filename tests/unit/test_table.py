"""Human table, budget bar and JSON form."""
from __future__ import annotations

import json

from dnscache_agent.stats.budget import BudgetStatus
from dnscache_agent.stats.catalogue import Sample
from dnscache_agent.stats.table import render_budget_bar, render_json, render_table


def test_table_shows_host_and_interface_rows() -> None:
    s = Sample(1.0, {"client_qps": 12.5, "cache_hit_ratio": 0.9},
               {"eth0": {"budget_pps": 300.0, "budget_headroom": 0.707, "ena_present": 1.0,
                         "ena_linklocal_allowance_exceeded": 3.0},
                "veth0": {"ena_present": 0.0}})
    out = render_table(s)
    assert "Client queries" in out and "12.5" in out and "90.0 %" in out
    assert "interface eth0" in out and "70.7 %" in out
    assert "not ENA" in out
    veth_block = out.split("interface veth0")[1]
    assert "linklocal" not in veth_block
    assert "Upstream packets" in out and "-" in out  # missing figures shown as "-"


def test_budget_bar() -> None:
    st = BudgetStatus("eth0", 1024.0, 512.0, 0.5, 700.0, 400.0, False)
    line = render_budget_bar(st, width=20)
    assert line.startswith("eth0 [##########..........|] 512/1024 pps")
    assert "headroom 50%" in line and "peak 700" in line and "WARNING" not in line
    over = render_budget_bar(BudgetStatus("eth0", 1024.0, 2048.0, -1.0, 2048.0, 900.0, True), 20)
    assert "[" + "#" * 20 + "!]" in over and over.endswith("WARNING")


def test_json_form_is_serialisable() -> None:
    doc = render_json(Sample(5.0, {"client_qps": 1.0}, {"eth0": {"budget_pps": 2.0}}))
    assert json.loads(json.dumps(doc))["host"]["client_qps"] == 1.0
    assert doc["units"]["client_qps"] == "queries/s"
