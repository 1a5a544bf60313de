"""`xdistill reproduce`: every claim of both papers as a pre-registered statistical test.

`claims` is the registry (what is claimed, by whom, on which sweep, by which rule), `stats`
the tests, `run` the orchestration through the sweep engine (resumable) and `report` the
REPRODUCTION.md / reproduction.json it writes (docs/reproduction.md).
"""
