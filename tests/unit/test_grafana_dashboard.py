"""The example Grafana dashboard queries only metrics the master exports."""

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from master.services.feeds import EXPORTED_METRICS
from tests.unit.test_feeds import pull
from tests.unit.test_distribution import enroll, heartbeat

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "mirror-sync.json"


def queried_metrics():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]
    return {name for expr in expressions for name in re.findall(r"\bmirrorsync_[a-z_]+", expr)}, panels


def test_the_dashboard_queries_only_exported_metrics(app, client, admin, make_project, clock):
    names, panels = queried_metrics()
    assert names and names <= set(EXPORTED_METRICS), names - set(EXPORTED_METRICS)
    make_project(schedule="0 * * * *")
    pull(app, client, admin)
    heartbeat(client, enroll(client, "one"), clock)
    scraped = {sample.name for family in text_string_to_metric_families(client.get("/metrics").data.decode())
               for sample in family.samples}
    assert names <= scraped, f"queried but not in a scrape: {names - scraped}"
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("freshness", "lag", "results", "duration"):
        assert topic in titles
