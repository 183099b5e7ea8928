"""Pure accounting formulas of the collector, each written once.

The modules here hold no state, do no I/O beyond reading a file they are pointed at (a weather
file) and import nothing of the web stack or the store: they are the arithmetic that the ledger
(per minute, as readings arrive) and ``wattledger plan`` (per month, for a projected fleet) both
run, so that a figure in a plan and the same figure in a bill can never be computed two ways.

- :mod:`.cooling`: the site's cooling model (``pue``, ``chiller``, ``metered``) as configuration
  (``sites.<name>.cooling``) and the chiller formula (EnergyPlus ``Chiller:Electric:EIR``).
- :mod:`.weather`: outdoor temperatures from an EnergyPlus weather (EPW) file.
- :mod:`.history`: the plan's sufficient statistics of a site's measured history (per GPU model
  and local day) and the interface a ledger provides them by (``MeasuredHistory``).
- :mod:`.profiles`: those statistics of one ingest, as the rows the ledger adds (``plan_days``).
"""
