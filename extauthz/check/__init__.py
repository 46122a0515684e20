"""The Check pipeline: an Envoy ``CheckRequest`` in, an allow or a denial out.

request context -> credentials -> session -> policy -> JWT minting -> the Envoy adapter
(docs/architecture.md).
"""
