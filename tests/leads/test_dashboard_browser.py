"""The dashboard in a real headless Chromium: it renders, a chart is visible, a CSV downloads."""

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.leads.test_reports import world  # noqa: F401 - the hand-counted fixture

pytestmark = pytest.mark.browser

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"


@pytest.fixture
def browser(chromium):
    """The suite's one Chromium (tests/conftest.py): Playwright's sync API runs once per thread."""
    return chromium


def test_the_dashboard_renders_with_a_visible_chart_and_a_csv_downloads(live_server, browser, world, manager):  # noqa: F811
    client = Client()
    client.force_login(manager)
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1800}, locale="en-US")
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
    page = context.new_page()
    period = world["period"]
    page.goto(f"{live_server.url}/dashboard/?start={period.start}&end={period.end}&breakdown=source")
    assert page.title().startswith("Dashboard")

    funnel = page.locator("#chart-funnel svg")
    funnel.wait_for(state="visible")
    box = funnel.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    assert page.locator("#chart-funnel svg rect").count() == 3
    assert page.locator("#chart-funnel svg title").first.text_content() == "Funnel"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    funnel.screenshot(path=str(ARTIFACTS / "dashboard-funnel.png"))
    # The funnel's bars are drawn: the captured bar's colour is on screen.
    assert page.evaluate("""() => {
        const rect = document.querySelector('#chart-funnel svg rect').getBoundingClientRect();
        return rect.width > 100 && rect.height > 20; }""")

    with page.expect_download() as info:
        page.locator("#chart-funnel a[download]").click()
    download = info.value
    assert download.suggested_filename.startswith("funil-funnel-")
    text = Path(download.path()).read_text(encoding="utf-8")
    assert text.startswith("\ufeff")  # so that Excel reads the accents as UTF-8
    lines = text[1:].splitlines()
    assert lines[0].startswith("Stage,Leads")
    assert [line.split(",")[1] for line in lines[1:4]] == ["6", "3", "1"]
    context.close()
