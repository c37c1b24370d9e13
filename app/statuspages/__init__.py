"""Public status pages: what a page shows, its limited Markdown and its badges.

A page is a tenant's curated, read-only view of some monitors (name, state,
uptime, optional latency), its posts and the active maintenance of those
monitors. Nothing of a monitor's definition (URL, host, conditions, errors)
ever leaves this package: :func:`app.statuspages.view.build_view` is the one
place that decides what a page (and so a badge, or an anonymous viewer) sees.
"""
