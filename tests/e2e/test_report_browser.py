"""The HTML report renders its plots in Chromium from file:// with every network request blocked."""
from __future__ import annotations

import pytest

from alwidgets import Pool, Session

pytestmark = pytest.mark.e2e


def test_report_renders_offline(browser, tmp_path, sync_api):
    with Session(Pool.digits(), selector="margin", store=":memory:", calibration=True,
                 classes=["<img src=x onerror=alert(1)>"] + [str(k) for k in range(1, 10)]) as s:
        for _ in range(2):
            s.label(10)
            s.submit({i: s.classes[s.pool.targets[s.pool.index_of(i)]] for i in s.batch})
        path = s.report(tmp_path / "report.html")

    context = browser.new_context()
    blocked, dialogs, errors = [], [], []
    context.route(lambda url: not url.startswith(("file:", "data:", "blob:")),
                  lambda route: (blocked.append(route.request.url), route.abort()))
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.as_uri())
        sync_api.expect(page.locator(".plotly .main-svg").first).to_be_attached(timeout=30_000)
        sync_api.expect(page.locator(".js-plotly-plot")).to_have_count(4)
        # the learning curve drew one marker per round; the class name is shown as text
        sync_api.expect(page.locator(".js-plotly-plot").first.locator(".scatterlayer .points path")).to_have_count(2)
        sync_api.expect(page.locator("td", has_text="<img src=x onerror=alert(1)>").first).to_be_visible()
        assert page.locator("img[src='x']").count() == 0
        widths = page.locator(".thumbs img").evaluate_all("els => els.map(e => e.naturalWidth)")
        assert widths and min(widths) > 0
    except Exception:
        shot = tmp_path / "report-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot of the failed page: {shot}")
        raise
    finally:
        context.close()
    assert not blocked, f"the report tried to reach the network: {blocked}"
    assert not dialogs and not errors, (dialogs, errors)
