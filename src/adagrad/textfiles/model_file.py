"""The model file of `adagrad fit`: a numpy ``.npz`` archive (no pickles) holding the
fitted estimator's arrays and a JSON header (the format tag, the estimator's class and
parameters, the featurizer's settings), written to a temporary name and renamed."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

from adagrad.textfiles.readers import InputError

FORMAT_TAG = "adagrad-linear-model"
FORMAT_VERSION = 1
ESTIMATORS = ("AdagradClassifier", "AdagradRegressor")  # in `adagrad.linear`


def save_model(path: str, model, settings: dict, idf: np.ndarray | None) -> None:
    """Write ``model`` (fitted: an estimator of `ESTIMATORS`, or a model of
    `adagrad.textfiles.linear_models` whose ``estimator`` names one) and the featurizer
    ``settings`` to ``path`` atomically."""
    header = {"format": FORMAT_TAG, "version": FORMAT_VERSION,
              "estimator": getattr(model, "estimator", None) or type(model).__name__,
              "params": model.get_params(),
              "settings": settings}
    arrays = {f"fitted{name}": value for name, value in model.fitted_arrays().items()}
    if idf is not None:
        arrays["idf"] = idf
    with atomic_file(path, "wb") as out:
        np.savez(out, header=np.array(json.dumps(header)), **arrays)


@contextlib.contextmanager
def atomic_file(path: str, mode: str):
    """A file that becomes ``path`` only when the block completes: written under a
    temporary name in the same folder, renamed at the end, removed on any error."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".adagrad-", dir=folder)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as out:
            yield out
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_model(path: str):
    """(model, settings, idf) of a model file, or `InputError` saying why it is none."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such model file") from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not an adagrad model file (or a corrupted one): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_TAG:
        raise InputError(f"{path}: not an adagrad model file (no {FORMAT_TAG!r} header)")
    if header.get("version") != FORMAT_VERSION or header.get("estimator") not in ESTIMATORS:
        raise InputError(f"{path}: unsupported model file version {header.get('version')!r} "
                         f"/ estimator {header.get('estimator')!r}")
    fitted = {name[len("fitted"):]: value for name, value in arrays.items()
              if name.startswith("fitted")}
    import adagrad.linear

    try:
        estimator = getattr(adagrad.linear, header["estimator"])
        model = estimator.from_fitted_arrays(header["params"], fitted)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: corrupted model file: {exc!r}") from None
    return model, header["settings"], arrays.get("idf")
