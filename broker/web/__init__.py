"""The broker's HTTP port: ``/metrics`` for Prometheus, ``/health`` for supervisors, and the
web console at ``/`` with the JSON API behind it (``app.WebAdapter``)."""
