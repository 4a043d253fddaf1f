"""A backup realm (PROTOCOL.md Part X §5): a small server, meant to be run by a party other
than the relay's operator, that holds one share and one OPRF key share per PIN backup,
counts wrong guesses and deletes both at the limit. It never sees a PIN, an address or a
secret: only record ids, blinded elements and unlock tags.

``xchat realm serve --port P --data DIR [--name NAME]`` runs one (:mod:`.cli`).
"""
