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


def epoch_line(record: dict, epochs: int) -> str:
    """One line per epoch for the progress output."""
    line = f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}"
    if "val_accuracy" in record:
        line += (
            f" | validation loss {record['val_loss']:.4f} accuracy {record['val_accuracy']:.4f}"
            f" f1 {record['val_f1']:.4f}"
        )
    return line + f" | {record['elapsed_s']:.0f} s"


def plot_history(history: list[dict], path) -> None:
    """Loss (train, validation), validation accuracy and F1 per epoch, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the train extra
        return
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    if history and "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation loss")
        right.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="validation accuracy")
        right.plot(epochs, [h["val_f1"] for h in history], marker="o", label="validation F1")
    for ax, title in ((left, "loss"), (right, "validation accuracy / F1")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
