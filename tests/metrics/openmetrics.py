"""Parses an OpenMetrics exposition on stdin with the OpenMetrics parser of
the Prometheus project's Python client (Debian: python3-prometheus-client),
which follows the specification strictly: `# EOF` last, counters' samples
named `_total`, info metrics `_info`, histogram buckets in order up to
`+Inf`, no family twice. Prints `families=N samples=M`; a violation is an
exception and exit status 1. Run by tests/metrics.rs."""

import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = list(text_string_to_metric_families(sys.stdin.read()))
print(f"families={len(families)} samples={sum(len(f.samples) for f in families)}")
