"""The reports: the HTML page is one self-contained document with its three charts (parsed: no
script, no external URL, nothing fetched at view time) that render as pictures; the CSV is the
months and a total row, money rounded to the currency; the JSON holds the contract's keys."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from plankit import ENTRY, measured_history, plan, scenario, site, sites_of

from wattledger.plan.cli import render
from wattledger.plan.projection import MONTH_KEYS

CONTRACT_KEYS = {"site", "currency", "months", "totals", "proposed_plan", "assumptions"}
URL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)


class Page(HTMLParser):
    """What a browser would fetch or run: every tag, and every attribute that names a resource."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.resources: list[str] = []
        self.svgs = 0
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.svgs += tag == "svg"
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "data", "poster", "srcset") and value:
                self.resources.append(value)
            if name == "style" and value:
                self.styles.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)


def measured_doc() -> dict[str, Any]:
    return plan(
        scenario(
            {"name": "existing", "measured": True},
            {**ENTRY, "power": "measured", "from": "2027-03"},
            ENTRY | {"name": "explicit"},
            months=24,
        ),
        sites_of(dc1=site()),
        measured_history(),
    )


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return measured_doc()


def test_the_html_page_is_self_contained_with_three_charts(doc: dict[str, Any]) -> None:
    page_text = render(doc, "html")
    page = Page()
    page.feed(page_text)
    assert page.svgs == 3
    assert page_text.count("<figure>") == 3
    assert not {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "base"} & set(
        page.tags
    )
    # the only references are to the charts' own definitions (#id), never to a file or a URL
    assert page.resources and all(ref.startswith("#") for ref in page.resources), page.resources[:5]
    assert not any(URL.match(r) for r in page.resources)
    css = " ".join(page.styles)
    assert "url(" not in css.replace("url(#", "") and "@import" not in css
    assert "<!DOCTYPE svg" not in page_text and "<metadata>" not in page_text
    ids = re.findall(r'\bid="([^"]+)"', page_text)
    assert len(ids) == len(set(ids)), "two charts share an id"
    text = " ".join(page.text)
    for words in (
        "Monthly cost by part",
        "Cumulative on-prem spend against the cloud",
        "break-even",
        "Power against utilization",
        "estimate",
        "upper bound",
        "Proposed plan",
        "readings",
    ):
        assert words in page_text, words
    profile = doc["profiles"][0]
    assert f"{profile['coverage']['readings']:,}" in text  # printed with the data it came from


def test_the_charts_render_as_pictures(doc: dict[str, Any]) -> None:
    import cairosvg
    from PIL import Image

    svgs = re.findall(r"<svg.*?</svg>", render(doc, "html"), flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:
        png = cairosvg.svg2png(bytestring=svg.encode(), background_color="white")
        image = Image.open(io.BytesIO(png)).convert("L")
        assert image.size[0] >= 600 and image.size[1] >= 250
        histogram = image.histogram()
        inked = sum(histogram[:200]) / (image.size[0] * image.size[1])
        assert 0.01 < inked < 0.6, inked  # drawn on, not blank and not a black box


def test_the_csv_is_months_and_a_total(doc: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(render(doc, "csv"))))
    assert len(rows) == len(doc["months"]) + 1
    assert list(rows[0]) == [*MONTH_KEYS, "currency"]
    total = rows[-1]
    assert total["month"] == "total" and total["currency"] == "USD"
    assert total["total_cost"] == f"{doc['totals']['total_cost']:.2f}"
    assert float(total["it_kwh"]) == pytest.approx(doc["totals"]["it_kwh"], abs=1e-3)
    assert rows[0]["energy_cost"] == f"{doc['months'][0]['energy_cost']:.2f}"


def test_the_json_holds_the_contract_and_its_extensions(doc: dict[str, Any]) -> None:
    parsed = json.loads(render(doc, "json"))
    assert set(parsed) >= CONTRACT_KEYS
    assert {"profiles", "sensitivity", "advice", "fleet", "cloud_comparison"} <= set(parsed)
    assert all(list(m) == list(MONTH_KEYS) for m in parsed["months"])
    assert set(parsed["totals"]) == set(MONTH_KEYS) - {"month"}
    assert {"site", "month", "cost", "it_energy_kwh"} <= set(parsed["proposed_plan"][0])


def test_an_explicit_only_plan_still_draws_three_charts() -> None:
    text = render(plan(scenario(cloud_price_per_gpu_hour=None), sites_of(dc1=site())), "html")
    page = Page()
    page.feed(text)
    assert page.svgs == 3
    assert "no cloud_price_per_gpu_hour in the scenario" in text  # the chart's title (matplotlib's comment)
    assert "power given in the scenario" in text
