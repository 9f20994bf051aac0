"""Write one API page per public module from its ``__all__``, so that the reference lists
every public name and cannot drift from the code: a name added to ``__all__`` gets its page
at the next build. A class exported by two modules (``adagrad.Adagrad`` is
``adagrad.optim.Adagrad``) is documented once, under the first module of ``api_modules``,
and linked from the others."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the tests import this module without Sphinx
    from sphinx.application import Sphinx
    from sphinx.config import Config

FOLDER = "api/generated"


def public_names(module_name: str) -> list[str]:
    """The names of ``module.__all__`` that get a page (dunders such as ``__version__`` do not)."""
    module = importlib.import_module(module_name)
    return [name for name in module.__all__ if not name.startswith("__")]


def module_page(module_name: str, documented: dict[int, str]) -> str:
    module = importlib.import_module(module_name)
    own, linked = [], []
    for name in public_names(module_name):
        obj = getattr(module, name)
        if id(obj) in documented:
            linked.append((name, documented[id(obj)]))
        else:
            documented[id(obj)] = f"{module_name}.{name}"
            own.append(name)
    lines = [module_name, "=" * len(module_name), "",
             f".. automodule:: {module_name}", "   :no-members:", "",
             f".. currentmodule:: {module_name}", ""]
    if own:
        lines += [".. autosummary::", "   :toctree: .", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in own] + [""]
    if linked:
        lines += ["The same objects as:", ""]
        lines += [f"- ``{module_name}.{name}`` is :py:obj:`{target}`" for name, target in linked]
        lines += [""]
    if module_name == "adagrad":
        lines += ["``adagrad.__version__`` is the installed version, a string.", ""]
    return "\n".join(lines)


def write_pages(app: Sphinx, config: Config) -> None:
    folder = Path(app.srcdir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    documented: dict[int, str] = {}
    for module_name in config.api_modules:
        page = folder / f"module-{module_name}.rst"
        text = module_page(module_name, documented)
        if not page.exists() or page.read_text() != text:
            page.write_text(text)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("api_modules", [], "env")
    app.connect("config-inited", write_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
