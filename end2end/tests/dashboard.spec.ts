// The Dashboard's charts (server-rendered SVG) at a desktop and a tablet
// width; the screenshots are attached to the report. At every width the
// page itself never scrolls sideways (wide tables scroll in their box).

import { expect, test } from './fixtures/test';

for (const width of [1440, 1024, 768]) {
  test(`the dashboard charts at ${width} px`, async ({ adminPage: page }, testInfo) => {
    await page.setViewportSize({ width, height: 1000 });
    await page.goto('/');
    for (const id of ['activity-hours', 'activity-days']) {
      const chart = page.getByTestId(id);
      await expect(chart.getByRole('img')).toBeVisible();
      // The admin's own sign-in in setup is in today's bar.
      expect(await chart.locator('rect.web').count()).toBeGreaterThan(0);
    }
    await expect(page.getByTestId('sync-history')).toBeVisible();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, 'no sideways scrolling of the page').toBeLessThanOrEqual(0);
    if (width !== 1024) {
      const path = testInfo.outputPath(`dashboard-${width}px.png`);
      await page.screenshot({ path, fullPage: true });
      await testInfo.attach(`dashboard-${width}px`, { path, contentType: 'image/png' });
    }
  });
}
