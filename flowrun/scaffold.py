"""`flowrun init DIR`: a flows repository that validates and tests out of the box."""

from __future__ import annotations

from pathlib import Path

from flowrun import __version__
from flowrun.errors import UsageError

FILES: dict[str, str] = {
    "flows/welcome.yaml": """\
# yaml-language-server: $schema=https://flowrun.dev/schemas/flow.schema.json
flow: welcome
description: Greet new customers who accept marketing; stop once they order.
on: customer.created
if: customer.email and customer.accepts_marketing
until: order.created
reentry: once
steps:
  - email:
      to: "{{ customer.email }}"
      subject: "Welcome, {{ customer.first_name | default('friend') }}!"
      template: templates/welcome.html.j2
  - wait: 3d
  - email:
      to: "{{ customer.email }}"
      subject: Have you seen our bestsellers?
      text: "Hi {{ customer.first_name | default('there') }}, here they are: https://shop.example.com/bestsellers"
""",
    "flows/templates/welcome.html.j2": """\
<html><body>
<h1>Welcome{% if customer.first_name %}, {{ customer.first_name }}{% endif %}!</h1>
<p>We are glad you are here.</p>
</body></html>
""",
    "flows/welcome.test.yaml": """\
tests:
  - name: two emails, three days apart
    timeline:
      - {at: 0s, event: ../events/customer.created.json}
    expect:
      - flow: welcome
        status: completed
        actions:
          - {at: 0s, type: email, params: {to: ada@example.com, subject: "Welcome, Ada!"}}
          - {at: 3d, type: email}
  - name: an order ends the series
    timeline:
      - {at: 0s, event: ../events/customer.created.json}
      - at: 1d
        event: {type: order.created, data: {customer: {email: ada@example.com}, order: {total_price: 20}}}
    expect:
      - flow: welcome
        status: converted
""",
    "events/customer.created.json": """\
{
  "type": "customer.created",
  "source": "shopify",
  "id": "customer-1",
  "occurred_at": "2026-01-05T09:00:00Z",
  "data": {"customer": {"id": "1", "email": "ada@example.com", "first_name": "Ada", "accepts_marketing": true}}
}
""",
    ".github/workflows/flows.yml": """\
name: flows
on: [push, pull_request]
jobs:
  check:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {python-version: "3.11"}
      # flowrun's distribution is flowrun-store (`flowrun` on PyPI is another project's), pinned
      - run: pip install "{requirement}"
      - run: flowrun validate flows/ --format github
      - run: flowrun test flows/
""",
    "README.md": """\
# Flows

Automation flows for our shop, run by flowrun.

    flowrun validate flows/        # schema and semantic checks (CI runs this)
    flowrun test flows/            # the tests next to each flow
    flowrun dry-run flows/ --event events/customer.created.json
""",
}


DISTRIBUTION = "flowrun-store"


def requirement(source: str | None = None) -> str:
    """What the CI snippet installs: this version of flowrun-store, or the shop's own copy
    (`git+https://github.com/shop/flowrun@v0.1.0`, a path, a wheel URL)."""
    if source:
        return f"{DISTRIBUTION} @ {source}"
    return f"{DISTRIBUTION}=={__version__}"


def scaffold(directory: Path, source: str | None = None) -> list[Path]:
    clashes = [directory / name for name in FILES if (directory / name).exists()]
    if clashes:
        raise UsageError(f"{clashes[0]} exists already; flowrun init never overwrites files")
    created = []
    for name, text in FILES.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == ".github/workflows/flows.yml":
            text = text.replace("{requirement}", requirement(source))
        target.write_text(text, encoding="utf-8")
        created.append(target)
    return created
