"""One router per API. ``ROUTERS`` is what ``create_app`` mounts, in order."""

from poolkit.server.routes import (classify, cohere, docs, embeddings, health, models, pooling, rerank, score,
                                   tei, tokenize)

ROUTERS = [embeddings.router, cohere.router, pooling.router, classify.router, score.router, rerank.router, tokenize.router,
           tei.router, models.router, health.router, docs.router]
