// The login log's filter bar is a plain GET form (bookmarkable, works
// without JavaScript): failures of one user, then the CSV export of exactly
// what the filters show, formula-safe.

import { strongPassword, uniqueName } from './fixtures/env';
import { LoginPage } from './fixtures/login-page';
import { expect, test } from './fixtures/test';

test('the login log filters by user and result, and exports what it shows', async ({ adminPage: page, newSession }) => {
  const who = uniqueName('=e2e-log');
  await test.step('two failed sign-ins of a name that looks like a formula', async () => {
    const other = await newSession();
    const login = new LoginPage(other);
    for (let i = 0; i < 2; i++) {
      await login.goto();
      await login.signIn(who, strongPassword());
      await login.expectFailed();
    }
  });

  await test.step('filter: that user, failures only', async () => {
    await page.goto('/logs/logins');
    const bar = page.getByRole('search', { name: 'Filter the log' });
    await bar.getByLabel('User').fill(who);
    await bar.getByLabel('Result').selectOption('failure');
    await bar.getByRole('button', { name: 'Apply' }).click();
    await expect(page).toHaveURL(/result=failure/);
    await expect(page.getByTestId('total')).toHaveText('Total 2');
    const rows = page.getByTestId('login-table').locator('tbody tr');
    await expect(rows).toHaveCount(2);
    await expect(rows.first()).toContainText(who);
  });

  await test.step('a bad date names the field', async () => {
    await page.goto(`/logs/logins?from=2026-13-45`);
    await expect(page.getByRole('alert')).toContainText('from: must be a date, YYYY-MM-DD');
  });

  await test.step('Export CSV carries the same filters', async () => {
    await page.goto(`/logs/logins?user=${encodeURIComponent(who)}&result=failure`);
    const href = await page.getByRole('link', { name: 'Export CSV' }).getAttribute('href');
    expect(href).toContain('result=failure');
    const res = await page.request.get(href!);
    expect(res.status()).toBe(200);
    const lines = (await res.text()).trim().split(/\r?\n/);
    expect(lines[0]).toBe('time,username,result,method,ip,user_agent,reason');
    expect(lines).toHaveLength(3);
    for (const l of lines.slice(1)) expect(l).toContain(`,'${who},failure,web,`);
  });
});
