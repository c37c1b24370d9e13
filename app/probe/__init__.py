"""The probe program (docs/probes.md): runs the checks of the monitors assigned to one
location and reports their results to Watchpost over ``/web``.

``python -m app.probe`` or the ``watchpost-probe`` console script (:mod:`app.probe.cli`).
A client program like :mod:`app.client`: it uses the server's check runners
(:func:`app.monitoring.collector.probe`) but nothing of the server itself.
"""
