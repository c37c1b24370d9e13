"""Load generator and scenario runner: ``python -m app.bench`` (``make bench``).

The bench starts its own servers (Watchpost against a fresh PostgreSQL database
and Redis, and a bare uvicorn + Starlette echo as the reference), pins them to
one CPU and itself to another, drives them over real WebSockets with the
``websockets`` client, and writes a JSON + Markdown results file. Scenarios
(rpc, fanout, idle, scale) are described in docs/operations.md.
"""
