"""Developer tools: scaffold a package handler, list the registry, write the protocol reference.

Run as modules (``python -m app.devtools.scaffold``, ``.handlers_table``,
``.protocol_docs``) or through ``make new-ws-handlers``, ``make ws-handlers``
and ``make ws-docs``. The server never imports this package.
"""
