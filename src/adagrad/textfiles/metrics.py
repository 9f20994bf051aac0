"""The metrics `adagrad fit` prints: accuracy, log loss and ROC AUC (two classes) for a
classifier, RMSE and MAE for a regressor, over a file read in batches."""

from __future__ import annotations

import numpy as np

PROBABILITY_FLOOR = 1e-15  # log loss of a class the model gives no probability (or never saw)


def metrics_of(model, batches) -> dict[str, float]:
    """The metrics of ``model`` on the (X, y) ``batches``."""
    truth, outputs = [], []
    classifier = hasattr(model, "classes_")
    for X, y in batches:
        truth.append(y)
        outputs.append(_outputs(model, X) if classifier else model.predict(X))
    y = np.concatenate(truth)
    if not classifier:
        error = np.concatenate(outputs) - y
        return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    return _classification_metrics(model, y, np.concatenate(outputs))


def _outputs(model, X) -> np.ndarray:
    """Class probabilities where the loss has them, else the decision function."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    scores = model.decision_function(X)
    return scores[:, None] if scores.ndim == 1 else scores


def _classification_metrics(model, y: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    classes = model.classes_
    if outputs.shape[1] == 1:  # binary decision function
        predicted = classes[(outputs[:, 0] > 0).astype(int)]
    else:
        predicted = classes[outputs.argmax(axis=1)]
    result = {"accuracy": float(np.mean(predicted == y))}
    if hasattr(model, "predict_proba"):
        index = np.searchsorted(classes, y).clip(0, classes.size - 1)
        seen = classes[index] == y
        p_true = np.where(seen, outputs[np.arange(y.size), index], 0.0)
        result["log_loss"] = float(-np.mean(np.log(np.maximum(p_true, PROBABILITY_FLOOR))))
    positive = y == classes[-1]
    if classes.size == 2 and 0 < positive.sum() < y.size:
        result["auc"] = roc_auc(positive, outputs[:, -1])
    return result


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """The area under the ROC curve of ``scores`` for the boolean labels ``positive`` (both
    classes present): the trapezoidal area under the (false, true positive rate) points
    at each distinct score, from the highest down, with the collinear points dropped;
    scikit-learn's ``roc_auc_score`` computation, operation for operation."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    cut = np.r_[np.nonzero(np.diff(ranked))[0], ranked.size - 1]  # the last of each score
    tps = np.cumsum(positive[order].astype(np.float64))[cut]
    fps = 1 + cut.astype(np.float64) - tps
    if fps.size > 2:  # keep the corners only
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps = fps[keep], tps[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))
