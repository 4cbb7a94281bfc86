"""Compact embedding types (Cohere Embed v2's ``embedding_types``), each defined without the request's values.

- ``binary`` / ``ubinary``: one bit per dimension, ``x > 0``, packed 8 to a byte (``numpy.packbits``);
  ``ubinary`` is the bytes, ``binary`` the bytes minus 128 as int8: Sentence Transformers'
  ``quantize_embeddings`` definitions.
- ``int8``: ``round(x * 127 / bound)`` clipped to [-127, 127]: symmetric around zero, so int8 vectors rank by
  dot product as the floats do. ``bound`` is fixed per model and output width: the largest absolute
  component over the embeddings of :data:`CALIBRATION_TEXTS` (computed once, cached by the caller), never
  from the request's own vectors, which would make one vector depend on its neighbours.
- ``uint8``: ``int8 + 128`` (same scale); subtract 128 before taking dot products.
- ``base64``: the float32 little-endian bytes, base64-encoded (what ``encoding_format="base64"`` returns).
"""

from __future__ import annotations

import base64
import numpy as np

EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")

# varied, fixed calibration inputs for the int8 bound: languages, lengths, code, numbers
CALIBRATION_TEXTS = [
    "The quick brown fox jumps over the lazy dog.", "How do I reset my password?",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "What is the capital of France?", "Paris is the capital and most populous city of France.",
    "Der schnelle braune Fuchs springt über den faulen Hund.", "Le chat dort sur le canapé depuis ce matin.",
    "¿Dónde está la estación de tren más cercana?", "東京は日本の首都です。", "机器学习模型需要大量的数据。",
    "Москва — столица России.", "def f(x): return x ** 2", "SELECT * FROM users WHERE id = 42;",
    "Revenue grew 12% year over year to $4.2 billion in the third quarter.",
    "Take two tablets daily with water after meals.", "The match ended 2-1 after extra time.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please find attached the invoice for last month's services.", "a", "hello world",
    "Mix flour, water and yeast, then let the dough rise for an hour before baking.",
    "The court ruled that the contract was void because one party lacked capacity.",
    "Gradient descent updates parameters in the direction that reduces the loss.",
    "Best hiking trails near the mountains with waterfalls and camping spots",
    "I loved this movie, the acting was superb and the plot kept me guessing!",
    "Terrible service, the food was cold and the waiter was rude.",
    "Quantum entanglement links the states of particles across any distance.",
    "Install the package with pip and run the tests before opening a pull request.",
    "The meeting has been moved to Thursday at 3 pm in room 204.",
    "Symptoms include fever, cough, fatigue and loss of taste or smell.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War.",
    "Our new phone has a 6.1-inch display, 128 GB of storage and all-day battery life.",
]


def int8_bound(calibration: np.ndarray) -> float:
    """The fixed bound of the int8 scale: the largest absolute component of the calibration embeddings."""
    bound = float(np.abs(calibration).max())
    return bound if bound > 0 else 1.0


def quantize(vectors: np.ndarray, kind: str, bound: float | None = None) -> np.ndarray | list[str]:
    """``vectors`` (``(n, d)`` float32) as ``kind``: an ``(n, d')`` array (float32, int8 or uint8 values; binary
    types ``d' = ceil(d / 8)``), or for ``base64`` one string per vector."""
    x = np.asarray(vectors, dtype=np.float32)
    if kind == "float":
        return x
    if kind == "base64":
        return [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in x]
    if kind in ("binary", "ubinary"):
        packed = np.packbits(x > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if kind == "binary" else packed
    if kind in ("int8", "uint8"):
        if bound is None:
            raise ValueError(f"{kind} needs the model's fixed bound (int8_bound)")
        q = np.clip(np.rint(x * (127.0 / bound)), -127, 127).astype(np.int16)
        return q.astype(np.int8) if kind == "int8" else (q + 128).astype(np.uint8)
    raise ValueError(f"unknown embedding type {kind!r}; choose from {list(EMBEDDING_TYPES)}")
