"""Linear models on the Adagrad family, as scikit-learn estimators (needs the ``linear``
extra: scikit-learn and scipy). The estimators are imported on first use, so that the
rest of the package (`adagrad fit`'s parser) needs neither."""

__all__ = ["AdagradClassifier", "AdagradRegressor"]


def __getattr__(name: str):
    if name in __all__:
        from adagrad.linear import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'adagrad.linear' has no attribute {name!r}")
