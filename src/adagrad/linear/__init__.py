"""Linear models on the Adagrad family, as scikit-learn estimators (needs the ``linear``
extra: scikit-learn and scipy)."""

from adagrad.linear.estimators import AdagradClassifier, AdagradRegressor

__all__ = ["AdagradClassifier", "AdagradRegressor"]
