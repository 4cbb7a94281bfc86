"""A deterministic set of varied texts: short queries, paragraphs past 256 tokens, empty, non-Latin, emoji."""

from __future__ import annotations

import random

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "¿Dónde está la estación de tren más cercana?",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "机器学习模型需要大量的数据来进行训练。",
    "서울은 대한민국의 수도입니다.",
    "Москва — столица России.",
    "مرحبا بكم في عالم معالجة اللغة الطبيعية",
    "नमस्ते, आप कैसे हैं?",
    "Ελληνικά γράμματα και λέξεις.",
    "Party time 🎉🎉 with friends 🍕🍺!",
    "def f(x): return x ** 2  # code is text too",
    "SELECT * FROM users WHERE id = 42;",
    "Visit https://example.com/path?query=1&b=2 for details.",
    "café naïve résumé coöperate façade",
    "UPPERCASE TEXT SHOULD BE LOWERED BY THE TOKENIZER",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\nin text",
    "a",
    "!!!???...",
    "1234567890 3.14159 2.71828",
]


def varied_texts(n: int = 240, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "🎉", "日本", *SENTENCES]
    while len(texts) < n:
        kind = rng.random()
        if kind < 0.45:  # short query
            texts.append(rng.choice(SENTENCES))
            texts[-1] = " ".join(texts[-1].split()[: rng.randint(1, 12)])
        elif kind < 0.8:  # paragraph
            texts.append(" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 12))))
        else:  # long: past 256 tokens, truncated by max_seq_length
            texts.append(" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(25, 60))))
    return texts[:n]
