"""The kubelet's PodResources API (gRPC, package ``v1``): ``api.proto`` and the modules
scripts/generate_protos.py makes from it (committed; never edited by hand)."""
