"""Prometheus text endpoint of a node (``http://HOST:PORT/metrics``).

The nodes keep their counters as plain attributes (the hot path pays nothing for metrics);
at each scrape a collector reads them and builds the metric families, in the HTTP server's
thread. Reads of ints and copies of dicts and deques are atomic under the GIL, so a scrape sees
a consistent-enough snapshot without a lock on the hot path.

Off unless ``[metrics] port`` (or ``--metrics-port``) is set; a port that cannot be bound is
logged and the node runs on without metrics: footage matters more than its statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from veilcam.common.stagetimer import StageTimes

log = logging.getLogger("veilcam.metrics")


def counter(
    name: str, doc: str, value: float | Mapping[str, float] = 0, label: str = ""
) -> CounterMetricFamily:
    """A counter, plain (``value`` a number) or by one label (``value`` a mapping)."""
    if not isinstance(value, Mapping):
        return CounterMetricFamily(name, doc, value=value)
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(value.items()):
        family.add_metric([str(key)], count)
    return family


def gauge(
    name: str, doc: str, value: float | Mapping[str, float] = 0, label: str = ""
) -> GaugeMetricFamily:
    if not isinstance(value, Mapping):
        return GaugeMetricFamily(name, doc, value=value)
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, level in sorted(value.items()):
        family.add_metric([str(key)], level)
    return family


def stage_latency(prefix: str, times: StageTimes) -> GaugeMetricFamily:
    """Median and 99th percentile of each hot-path stage over the recent window."""
    family = GaugeMetricFamily(
        f"{prefix}_stage_latency_seconds",
        "Latency of each pipeline stage over the recent window (last 20000 samples).",
        labels=["stage", "quantile"],
    )
    for stage, summary in sorted(times.summary().items()):
        family.add_metric([stage, "0.5"], summary["p50_ms"] / 1000)
        family.add_metric([stage, "0.99"], summary["p99_ms"] / 1000)
    return family


def with_labels(families: list[Metric], labels: dict[str, str]) -> list[Metric]:
    """The same families with ``labels`` on every sample (a node names itself once)."""
    for family in families:
        family.samples = [s._replace(labels={**labels, **s.labels}) for s in family.samples]
    return families


class _Collector:
    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self.families())
        except Exception:  # a scrape must never take the node down; the log says why
            log.exception("metrics collection failed")
            return []


class MetricsServer:
    """The HTTP endpoint; ``close()`` stops it."""

    def __init__(self, host: str, port: int, families: Callable[[], Iterable[Metric]]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(families))
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.address = f"http://{host}:{self._server.server_address[1]}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(
    host: str, port: int, what: str, families: Callable[[], Iterable[Metric]]
) -> MetricsServer | None:
    """Start the endpoint if ``port`` is set; None when off or when the port is taken."""
    if not port:
        return None
    try:
        server = MetricsServer(host, port, families)
    except OSError as exc:
        log.error(
            "cannot serve %s metrics on %s:%d (%s); running on without metrics "
            "(change [metrics] port or --metrics-port)",
            what,
            host,
            port,
            exc,
        )
        return None
    log.info("%s metrics: %s", what, server.address)
    return server
