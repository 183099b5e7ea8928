"""The ledger's durable store: all SQL of the collector, behind one interface."""
