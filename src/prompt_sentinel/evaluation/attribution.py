"""Token attributions: which words pushed a prompt toward the predicted class rather than the true one.

Both explain the same quantity for a mistake: ``F = logit(predicted) − logit(true)``.

* **Linear models** (a scikit-learn pipeline of TF-IDF vectorizers and a model with ``coef_``, e.g. logistic
  regression): ``F`` is exactly ``Σ_j x_j (w_pred,j − w_true,j) + (b_pred − b_true)``. Each feature's term is
  shared out over the places it occurs in the (normalized) text — a word n-gram over the words it spans, a
  character n-gram over the word it was cut from — so the words' contributions plus the intercept term sum to
  ``F`` (:func:`linear_attributions`).
* **Transformers**: integrated gradients over the input embeddings, from an all-zero baseline, ``steps``
  midpoint-rule steps (:func:`integrated_gradients`); word-piece attributions are summed per word. By IG's
  completeness they sum to ``F(x) − F(baseline)`` up to the integration error. Written here in ~30 lines of
  torch rather than through captum: one method on one model type did not earn a dependency. A transformer
  served on ONNX Runtime is explained through its torch weights (``torch_twin``), which the parity gate held to
  the same answers.

Other models (embeddings, trees, calibrated SVMs, ensembles) get no attributions (``None``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

WORD = re.compile(r"\S+")


@dataclass
class Attribution:
    """Per-word contributions of one text toward ``predicted`` over ``true`` (``F`` = their logit difference)."""

    text: str  # the normalized text the model saw
    words: list[tuple[int, int, float]]  # (start, end, contribution) of each whitespace-separated word
    bias: float  # the part of F no word carries: the intercept difference, or F(baseline) for IG
    logit_difference: float  # F(x)
    unassigned: float = 0.0  # feature terms found nowhere in the text (should be ~0)
    method: str = ""

    def total(self) -> float:
        return float(sum(c for _, _, c in self.words) + self.bias + self.unassigned)

    def segments(self, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` characters as segments with a weight in [-1, 1] (scaled by the largest |word|)."""
        scale = max((abs(c) for _, _, c in self.words), default=0.0) or 1.0
        out, cursor = [], 0
        for start, end, contribution in self.words:
            if start >= limit:
                break
            if start > cursor:
                out.append({"text": self.text[cursor:start], "weight": 0.0})
            out.append({"text": self.text[start : min(end, limit)], "weight": contribution / scale})
            cursor = min(end, limit)
        if cursor < min(len(self.text), limit):
            out.append({"text": self.text[cursor:limit], "weight": 0.0})
        return out

    def top_words(self, k: int = 5) -> list[tuple[str, float]]:
        ranked = sorted(self.words, key=lambda w: -w[2])[:k]
        return [(self.text[s:e], float(c)) for s, e, c in ranked if c > 0]


# --- linear models ------------------------------------------------------------------------------------------


def _linear_parts(estimator: Any) -> tuple[list[tuple[Any, int]], Any] | None:
    """The pipeline's vectorizers with their column offsets, and its linear classifier; None if not that shape."""
    steps = getattr(estimator, "steps", None)
    if not steps or len(steps) < 2:
        return None
    features, model = steps[0][1], steps[-1][1]
    if not hasattr(model, "coef_") or not hasattr(model, "intercept_") or len(steps) != 2:
        return None
    parts = getattr(features, "transformer_list", None)
    vectorizers = [t for _, t in parts] if parts is not None else [features]
    out, offset = [], 0
    for vectorizer in vectorizers:
        if not hasattr(vectorizer, "build_analyzer") or not hasattr(vectorizer, "vocabulary_"):
            return None
        out.append((vectorizer, offset))
        offset += len(vectorizer.get_feature_names_out())
    return out, model


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in WORD.finditer(text)]


def _locate(vectorizer: Any, text: str, words: list[tuple[int, int]]) -> dict[str, list[int]]:
    """Feature string → indices of the words each of its occurrences lies in (one entry per word covered)."""
    preprocessed = vectorizer.build_preprocessor()(text)
    if len(preprocessed) != len(text):  # a preprocessor that changes lengths: spans cannot be mapped
        return {}
    start_of = [s for s, _ in words]

    def word_of(position: int) -> int:
        import bisect

        return max(0, bisect.bisect_right(start_of, position) - 1)

    found: dict[str, list[int]] = defaultdict(list)
    low, high = vectorizer.ngram_range
    if vectorizer.analyzer == "word":
        pattern = re.compile(vectorizer.token_pattern)
        tokens = [(m.group(), m.start()) for m in pattern.finditer(preprocessed)]
        for n in range(low, high + 1):
            for i in range(len(tokens) - n + 1):
                gram = " ".join(t for t, _ in tokens[i : i + n])
                found[gram].extend(word_of(pos) for _, pos in tokens[i : i + n])
    elif vectorizer.analyzer == "char_wb":
        for index, (start, end) in enumerate(words):
            padded = f" {preprocessed[start:end]} "
            for n in range(low, high + 1):
                for i in range(max(len(padded) - n + 1, 1)):
                    found[padded[i : i + n]].append(index)
    elif vectorizer.analyzer == "char":
        for n in range(low, high + 1):
            for i in range(len(preprocessed) - n + 1):
                found[preprocessed[i : i + n]].append(word_of(i))
    return found


def linear_attributions(estimator: Any, text: str, predicted: int, true: int, classes: list[int]) -> Attribution | None:
    """Per-word contributions of a linear TF-IDF model (see the module docstring); None for other models."""
    parts = _linear_parts(estimator)
    if parts is None:
        return None
    vectorizers, model = parts
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] != len(classes):  # binary models keep one row
        return None
    p, t = classes.index(predicted), classes.index(true)
    delta = coef[p] - coef[t]
    x = estimator.steps[0][1].transform([text]).tocsr()
    words = _word_spans(text)
    contributions = np.zeros(len(words))
    unassigned = 0.0
    for vectorizer, offset in vectorizers:
        names = vectorizer.get_feature_names_out()
        width = len(names)
        block = x[:, offset : offset + width]
        occurrences = _locate(vectorizer, text, words)
        for column, value in zip(block.indices, block.data, strict=True):
            term = float(value * delta[offset + column])
            places = occurrences.get(str(names[column]))
            if not places or not words:
                unassigned += term
                continue
            np.add.at(contributions, places, term / len(places))
    logits = np.asarray(estimator.decision_function([text]), dtype=np.float64)[0]
    return Attribution(
        text=text,
        words=[(s, e, float(c)) for (s, e), c in zip(words, contributions, strict=True)],
        bias=float(intercept[p] - intercept[t]),
        logit_difference=float(logits[p] - logits[t]),
        unassigned=unassigned,
        method="linear TF-IDF contributions",
    )


# --- transformers -----------------------------------------------------------------------------------------


def integrated_gradients(
    model: Any, tokenizer: Any, text: str, predicted: int, true: int, max_length: int, steps: int = 32
) -> Attribution:
    """Integrated gradients of ``logit[predicted] − logit[true]`` w.r.t. the input embeddings, summed per word."""
    import torch

    encoded = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in encoded.items()}
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        x = embedding(inputs["input_ids"]).float()  # (1, T, H)
    baseline = torch.zeros_like(x)
    alphas = (torch.arange(steps, dtype=torch.float32, device=device) + 0.5) / steps
    path = (baseline + alphas[:, None, None] * (x - baseline)).requires_grad_(True)  # (steps, T, H)
    extra = {k: v.expand(steps, -1) for k, v in inputs.items() if k != "input_ids"}
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        logits = model(inputs_embeds=path, **extra).logits.float()
        objective = (logits[:, predicted] - logits[:, true]).sum()
        (grads,) = torch.autograd.grad(objective, path)
    with torch.no_grad():
        pair = {k: v.expand(2, -1) for k, v in inputs.items() if k != "input_ids"}
        ends = model(inputs_embeds=torch.cat([baseline, x]), **pair)
        end_logits = ends.logits.float()
    model.train(was_training)
    per_token = ((x - baseline) * grads.mean(dim=0, keepdim=True)).sum(dim=-1)[0].detach().cpu().numpy()
    words = _word_spans(text)
    starts = [s for s, _ in words]
    contributions = np.zeros(len(words))
    unassigned = 0.0
    import bisect

    for (start, end), value in zip(offsets, per_token, strict=True):
        if end <= start or not words:  # special tokens ([CLS], [SEP]) have empty spans
            unassigned += float(value)
            continue
        contributions[max(0, bisect.bisect_right(starts, start) - 1)] += float(value)
    f_x = float(end_logits[1, predicted] - end_logits[1, true])
    f_base = float(end_logits[0, predicted] - end_logits[0, true])
    return Attribution(
        text=text,
        words=[(s, e, float(c)) for (s, e), c in zip(words, contributions, strict=True)],
        bias=f_base,
        logit_difference=f_x,
        unassigned=unassigned,
        method=f"integrated gradients ({steps} steps, zero-embedding baseline)",
    )


def attribute(model: Any, text: str, predicted: int, true: int, steps: int = 32) -> Attribution | None:
    """Attributions for a loaded :class:`~prompt_sentinel.models.base.SentinelModel`, when its family has them."""
    from prompt_sentinel.text import normalize_text

    normalized = normalize_text(text)
    estimator = getattr(model, "estimator", None)
    if estimator is not None:
        classes = [int(c) for c in getattr(estimator, "classes_", range(len(model.labels)))]
        if predicted not in classes or true not in classes:
            return None
        return linear_attributions(estimator, normalized, predicted, true, classes)
    twin = getattr(model, "torch_twin", None)  # a transformer served on ONNX Runtime: explain its torch weights
    if twin is not None:
        model = twin()
    network, tokenizer = getattr(model, "model", None), getattr(model, "tokenizer", None)
    if network is not None and tokenizer is not None and hasattr(network, "get_input_embeddings"):
        if not getattr(tokenizer, "is_fast", False):  # offsets need a fast tokenizer
            return None
        return integrated_gradients(network, tokenizer, normalized, predicted, true, model.max_length, steps)
    return None
