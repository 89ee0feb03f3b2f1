"""Query statistics: bind's statistics channel, ENA allowance counters, rate maths, the
per-interface packet budget, and the metric catalogue the table and sinks are generated from."""
