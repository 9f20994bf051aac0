"""Write the intersphinx inventories shipped with the docs (the build reaches no documentation
site). Each lists the names the pages and docstrings link to, with the address the project's
own site gives them. Run it after adding a link to a name that is not listed:

    python docs/_inventories/make_inventories.py
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _generated(names: list[str], role: str = "py:class") -> list[tuple[str, str, str]]:
    return [(name, role, f"generated/{name}.html#{name}") for name in names]


INVENTORIES: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "torch": ("PyTorch", "2.13", [
        *_generated(["torch.optim.Adagrad", "torch.optim.Optimizer", "torch.optim.SGD",
                     "torch.optim.RMSprop", "torch.optim.Adadelta", "torch.optim.Adam",
                     "torch.nn.Embedding", "torch.nn.EmbeddingBag", "torch.nn.Module",
                     "torch.nn.Linear", "torch.nn.parameter.Parameter",
                     "torch.nn.parallel.DistributedDataParallel",
                     "torch.amp.GradScaler"]),
        ("torch.optim.Optimizer.step", "py:method",
         "generated/torch.optim.Optimizer.step.html#torch.optim.Optimizer.step"),
        ("torch.optim.Optimizer.state_dict", "py:method",
         "generated/torch.optim.Optimizer.state_dict.html#torch.optim.Optimizer.state_dict"),
        ("torch.optim.Optimizer.load_state_dict", "py:method",
         "generated/torch.optim.Optimizer.load_state_dict.html"
         "#torch.optim.Optimizer.load_state_dict"),
        ("torch.Tensor", "py:class", "tensors.html#torch.Tensor"),
        ("torch.dtype", "py:class", "tensor_attributes.html#torch.dtype"),
        ("torch.device", "py:class", "tensor_attributes.html#torch.device"),
        ("torch.distributed.checkpoint", "py:module", "distributed.checkpoint.html"),
        ("torch.distributed.ProcessGroup", "py:class", "distributed.html"),
        ("torch.compile", "py:function", "generated/torch.compile.html#torch.compile"),
    ]),
    "numpy": ("NumPy", "2.4", [
        ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
        ("numpy.float64", "py:class", "reference/arrays.scalars.html#numpy.float64"),
        ("numpy.random.Generator", "py:class",
         "reference/random/generator.html#numpy.random.Generator"),
    ]),
    "sklearn": ("scikit-learn", "1.9", [
        *[(name, "py:class", f"modules/generated/{name}.html#{name}") for name in [
            "sklearn.linear_model.SGDClassifier", "sklearn.linear_model.SGDRegressor",
            "sklearn.feature_extraction.text.TfidfVectorizer",
            "sklearn.feature_extraction.text.HashingVectorizer",
            "sklearn.pipeline.Pipeline", "sklearn.base.BaseEstimator"]],
        ("sklearn.pipeline.make_pipeline", "py:function",
         "modules/generated/sklearn.pipeline.make_pipeline.html#sklearn.pipeline.make_pipeline"),
        ("sklearn.utils.estimator_checks.check_estimator", "py:function",
         "modules/generated/sklearn.utils.estimator_checks.check_estimator.html"
         "#sklearn.utils.estimator_checks.check_estimator"),
    ]),
    "python": ("Python", "3", [
        ("argparse", "py:module", "library/argparse.html#module-argparse"),
        ("pathlib.Path", "py:class", "library/pathlib.html#pathlib.Path"),
        ("ValueError", "py:exception", "library/exceptions.html#ValueError"),
        ("RuntimeError", "py:exception", "library/exceptions.html#RuntimeError"),
        ("NotImplementedError", "py:exception", "library/exceptions.html#NotImplementedError"),
    ]),
}


def inventory(project: str, version: str, entries: list[tuple[str, str, str]]) -> bytes:
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries))
    return header + zlib.compress(body.encode())


def main() -> None:
    for name, (project, version, entries) in INVENTORIES.items():
        (HERE / f"{name}.inv").write_bytes(inventory(project, version, entries))


if __name__ == "__main__":
    main()
