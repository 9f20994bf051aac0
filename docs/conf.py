"""Sphinx configuration of the `adagrad` documentation (built by ``python3 dev.py docs``)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

import adagrad  # noqa: E402

project = "adagrad"
author = "the adagrad authors"
copyright = "2026, the adagrad authors"
release = version = adagrad.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinxarg.ext",
    "api_pages",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "results/**", "auto_examples/*.md5",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json"]
templates_path = ["_templates"]
default_role = "py:obj"  # `name` in a docstring links where the name is known, else plain
suppress_warnings = ["config.cache"]  # sphinx-gallery's unpicklable config values

# -- prose (MyST) --------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference ---------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

#: the public modules whose ``__all__`` gets an API page (docs/_ext/api_pages.py)
api_modules = ["adagrad", "adagrad.optim", "adagrad.nn", "adagrad.linear", "adagrad.distributed"]

# -- links to other projects' documentation ------------------------------------------------
# The build machines reach no documentation site, so the inventories are shipped: each
# lists the names these pages link to, at the address their project's site gives them
# (docs/_inventories/make_inventories.py writes them).
intersphinx_mapping = {
    name: (url, str(DOCS / "_inventories" / f"{name}.inv"))
    for name, url in {
        "python": "https://docs.python.org/3/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "numpy": "https://numpy.org/doc/stable/",
        "sklearn": "https://scikit-learn.org/stable/",
    }.items()
}

# -- the example gallery ---------------------------------------------------------------------
# Executed at build time: the scripts that run in about a minute or less on a CPU. The
# distributed example needs torchrun and several processes: shown, not run.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(?!distributed_)[a-z0-9_]+\.py$",
    "ignore_pattern": r"__init__\.py",
    "reset_argv": lambda gallery_conf, script_vars: (
        ["--epochs", "1", "--seeds", "1"] if script_vars["src_file"].endswith("l1_sparsity.py") else []),
    "abort_on_example_error": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "run_stale_examples": False,
}
os.environ.setdefault("OMP_NUM_THREADS", "1")

# -- the HTML site -----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"adagrad {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 7,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_copy_source = False


def _check_modules() -> None:
    for name in api_modules:
        importlib.import_module(name)


_check_modules()


def _skip_member(app, what, name, obj, skip, options):
    """scikit-learn's generated ``set_*_request`` methods (metadata routing) are its API, not
    ours: their docstrings point into scikit-learn's own site."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _claims() -> str:
    """The compare's claims as the report words them, from the code that judges them."""
    from adagrad.experiments.claims import judge

    return "\n".join(f"- **`{claim.id}`**: {claim.claim}" for claim in judge([]))


def _compare_results() -> str:
    """The latest compare results, where `adagrad compare` wrote them for the site."""
    results = DOCS / "results" / "compare.md"
    if not results.exists():
        return ""
    return "## Latest results\n\n```{include} ../results/compare.md\n```\n"


MARKERS = {"<!-- compare-claims -->": _claims, "<!-- compare-results -->": _compare_results}


def _fill_markers(app, docname, source):
    for marker, fill in MARKERS.items():
        if marker in source[0]:
            source[0] = source[0].replace(marker, fill())


def _always_reread(app, env, added, changed, removed):
    """The pages whose markers read files Sphinx does not track are read again every build."""
    return ["guides/compare"]


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("source-read", _fill_markers)
    app.connect("env-get-outdated", _always_reread)
