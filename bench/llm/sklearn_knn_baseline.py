#!/usr/bin/env python3
"""The issue's baseline router on switchyard's exact split: scikit-learn TF-IDF + kNN(40), cosine.

Reads split.json written by `switchyard llm eval --out DIR` (the train and test prompts with
their scores), fits a TfidfVectorizer on the training prompts, predicts each model's score on a
test prompt as the mean over its 40 nearest training prompts (cosine), routes to the strong model
when the predicted gain q_strong - q_weak passes a threshold, and prints APGR both ways
(the exact curve over every threshold and RouteLLM's decile estimate), as JSON on stdout.
Also times the routing decision (featurise + kNN) per prompt.
"""
import json
import sys
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors


def exact_apgr(gain, s_strong, s_weak):
    order = np.argsort(-gain, kind="stable")
    n = len(gain)
    q = s_weak.sum()
    shares, quals = [0.0], [q / n]
    k = 0
    while k < n:
        g = gain[order[k]]
        while k < n and gain[order[k]] == g:
            i = order[k]
            q += s_strong[i] - s_weak[i]
            k += 1
        shares.append(k / n)
        quals.append(q / n)
    weak_q, strong_q = s_weak.mean(), s_strong.mean()
    pgr = (np.array(quals) - weak_q) / (strong_q - weak_q)
    return float(np.trapz(pgr, shares))


def decile_apgr(gain, s_strong, s_weak):
    edges = np.quantile(gain, np.linspace(0, 1, 11))
    points = []
    for e, t in enumerate(edges):
        sel = gain >= t if e < 10 else gain > t
        points.append((sel.mean(), np.where(sel, s_strong, s_weak).mean()))
    points.sort(key=lambda p: p[0])
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    weak_q, strong_q = s_weak.mean(), s_strong.mean()
    span = x[-1] - x[0]
    return float((np.trapz(y, x) - weak_q * span) / ((strong_q - weak_q) * span))


def main():
    split = json.load(open(sys.argv[1]))
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    models = split["models"]
    s, w = models.index(split["strong"]), models.index(split["weak"])
    train_prompts = [r["prompt"] for r in split["train"]]
    test_prompts = [r["prompt"] for r in split["test"]]
    y_train = np.array([r["scores"] for r in split["train"]], dtype=float)
    y_test = np.array([r["scores"] for r in split["test"]], dtype=float)

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer()
    x_train = vectorizer.fit_transform(train_prompts)
    knn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x_train)
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, idx = knn.kneighbors(vectorizer.transform(test_prompts))
    batch_us = (time.perf_counter() - t0) / len(test_prompts) * 1e6
    pred = y_train[idx].mean(axis=1)  # (N, M)
    gain = pred[:, s] - pred[:, w]

    # One prompt at a time, as a gateway routes: featurise + kNN.
    latencies = []
    for p in test_prompts[:300]:
        t0 = time.perf_counter()
        knn.kneighbors(vectorizer.transform([p]))
        latencies.append((time.perf_counter() - t0) * 1e6)
    latencies.sort()

    print(json.dumps({
        "router": f"sklearn TfidfVectorizer + kNN({k}) cosine",
        "train_rows": len(train_prompts),
        "test_rows": len(test_prompts),
        "apgr": exact_apgr(gain, y_test[:, s], y_test[:, w]),
        "apgr_deciles": decile_apgr(gain, y_test[:, s], y_test[:, w]),
        "fit_seconds": fit_s,
        "route_us_per_prompt_batched": batch_us,
        "route_us_single_p50": latencies[len(latencies) // 2],
        "route_us_single_p99": latencies[int(len(latencies) * 0.99)],
    }))


if __name__ == "__main__":
    main()
