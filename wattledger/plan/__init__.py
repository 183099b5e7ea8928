"""``wattledger plan``: what a site's fleet and its next servers will cost to run and cool.

- :mod:`.scenario`: the scenario YAML and its checks (every problem a field and a reason);
- :mod:`.history`: what a plan needs of the ledger (sufficient statistics) and the Protocol the
  ledger implements; :mod:`.profile`: the measured power profiles fitted from them;
- :mod:`.calendar`, :mod:`.inputs`, :mod:`.projection`: the months and the formulas;
- :mod:`.advice`: idle GPUs and power caps (estimates);
- :mod:`.build`: the plan document; :mod:`.report_csv`, :mod:`.report_html`: its renderings;
- :mod:`.cli`: the command.
"""
