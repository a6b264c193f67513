"""Sphinx configuration of the API reference: autodoc over the docstrings, napoleon for their
Google/NumPy sections (as jax and optax do).

    pip install ".[docs]" && sphinx-build -W -b html docs/api docs/_build/api
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)  # document the checkout, not an installed copy

project = "stn"
author = "the stn authors"
copyright = "the stn authors, Apache-2.0"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # signatures stay short; types go beside the parameters
napoleon_google_docstring = True
napoleon_numpy_docstring = True
# "Attributes:" sections as fields of their class, so a dataclass field autodoc also lists is
# not described twice.
napoleon_use_ivar = True
# The docstrings write code in Markdown's single backticks: read them as inline code.
default_role = "code"
html_theme = "alabaster"
html_title = "stn API reference"
