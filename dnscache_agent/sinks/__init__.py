"""Metric sinks: CloudWatch (PutMetricData StatisticSets) and Prometheus (scrape or textfile).
Both take `catalogue.Sample` values, so they publish the same figures under their own names."""
