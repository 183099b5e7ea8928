"""wattledger's Grafana dashboards as code (grafana-foundation-sdk).

`python -m dashboards.build` writes the JSON under dashboards/json/ that Grafana provisions
(dashboards/provisioning/); `python -m dashboards.build --check` fails when the committed
JSON is not what the code generates.
"""
