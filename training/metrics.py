"""Classification metrics for the two labels (1 = the answer fits the question)."""

from __future__ import annotations

from collections.abc import Sequence


def classification_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict:
    pairs = [(y, p) for y, p in zip(labels, predictions, strict=True) if y in (0, 1)]
    tp = sum(1 for y, p in pairs if y == 1 and p == 1)
    tn = sum(1 for y, p in pairs if y == 0 and p == 0)
    fp = sum(1 for y, p in pairs if y == 0 and p == 1)
    fn = sum(1 for y, p in pairs if y == 1 and p == 0)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(pairs) if pairs else 0.0,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "confusion_matrix": [[tn, fp], [fn, tp]],  # rows: true 0/1, columns: predicted 0/1
        "count": len(pairs),
    }


def format_confusion(matrix: list[list[int]]) -> str:
    (tn, fp), (fn, tp) = matrix
    return f"                predicted 0  predicted 1\n  true 0 {tn:>14} {fp:>12}\n  true 1 {fn:>14} {tp:>12}"
