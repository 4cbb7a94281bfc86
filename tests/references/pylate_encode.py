"""Build PyLate ColBERT checkpoints from tiny backbones and encode with PyLate itself (the reference).

Argument: a JSON spec ``{"result": path, "models": [{"base": dir, "out": dir, "kwargs": {...},
"queries": [...], "documents": [...]}]}``. For each model: ``pylate.models.ColBERT(base, **kwargs)``
(random Dense projection, marker tokens added), saved to ``out``, reloaded from ``out`` and used to
encode the queries (``is_query=True``) and documents (``is_query=False``), and to score them with
PyLate's MaxSim. Writes ``{"models": [{"queries": [[...]], "documents": [...], "scores": [[...]]}]}``.
"""

import json
import sys

import torch


def main(spec: dict) -> None:
    from pylate import models, scores

    results = []
    for m in spec["models"]:
        torch.manual_seed(m.get("seed", 0))
        models.ColBERT(m["base"], device="cpu", **m.get("kwargs", {})).save(m["out"])
        model = models.ColBERT(m["out"], device="cpu")
        q = model.encode(m["queries"], is_query=True, convert_to_numpy=False)
        d = model.encode(m["documents"], is_query=False, convert_to_numpy=False)
        s = [[float(scores.colbert_scores(a[None], b[None])[0, 0]) for b in d] for a in q]  # unpadded, pair by pair
        results.append({"queries": [x.tolist() for x in q], "documents": [x.tolist() for x in d], "scores": s})
    with open(spec["result"], "w") as f:
        json.dump({"models": results}, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
