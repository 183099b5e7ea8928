"""Prometheus remote-write 1.0 messages (protobuf package ``prometheus``): ``remote.proto`` and the
module scripts/generate_protos.py makes from it (committed; never edited by hand)."""
