"""Conditions and templates: Jinja2 in a sandbox with StrictUndefined.

Both are parsed when a flow loads (syntax errors, unknown filters and tests, and the
fields they read are known before anything runs); the Python code Jinja generates is
built once on first use and shared by identical sources. See `env` for the bounds on one
render, `raw` for how `event.raw` reads, `values` for typed parameters and `money` for
amounts.
"""

from __future__ import annotations

from flowrun.templating.condition import Condition, lookup, parse_condition
from flowrun.templating.env import GLOBALS, HTML_ENV, TEXT_ENV
from flowrun.templating.fields import FieldPath, FieldUse
from flowrun.templating.money import DEFAULT_LOCALE
from flowrun.templating.template import Template, TemplateSyntax, column_of, parse_template

__all__ = [
    "DEFAULT_LOCALE",
    "GLOBALS",
    "HTML_ENV",
    "TEXT_ENV",
    "Condition",
    "FieldPath",
    "FieldUse",
    "Template",
    "TemplateSyntax",
    "column_of",
    "lookup",
    "parse_condition",
    "parse_template",
]
