"""What /metrics, /v1/spend and /v1/nodes read: the fleet as the store holds it."""
