"""Integrations with other systems, each behind its own optional extra.

- :mod:`poolkit.integrations.ray`: Ray Data ``map_batches`` with one Engine per actor, and the
  ``poolkit serve`` app as a Ray Serve deployment (``pip install 'poolkit[ray]'``).
"""
