"""``poolkit serve``: an OpenAI-compatible HTTP server (FastAPI) with token-budget dynamic batching.

Layout: ``protocol.py`` (pydantic request/response schemas), ``errors.py`` (OpenAI-style error
bodies and status codes), ``worker.py`` (one engine loop per model: queue, admission, batching),
``state.py`` (served models, limits, metrics), ``app.py`` (``create_app``), ``routes/`` (one
router per API).
"""
