// User import: Sync users (progress) → filter → select → import into an
// organisation → the rows show "Already exists"; each row's outcome listed.

import { waitForHydration } from './fixtures/hydration';
import { saveAsLdapHa, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { BASE_URL } from './fixtures/env';
import { expect, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
});
test.afterAll(() => {
  stopDirectory(d);
});

test('Sync users, filter, select, import into an organisation; the rows then exist', async ({ adminPage: page }) => {
  test.slow();
  const headers = { Origin: BASE_URL };
  // LDAP HA with page size 2, so the enumeration takes several pages; and
  // an organisation to import into.
  await saveAsLdapHa(page.request, d, BASE_URL, { page_size: 2 });
  const org = await page.request.post('/api/v1/organisations', { headers, data: { name: 'Imported E2E' } });
  expect([201, 409]).toContain(org.status());

  await page.goto('/import?dir=ldap_ha');
  await waitForHydration(page, { forms: true });
  await page.getByRole('button', { name: 'Sync users' }).click();
  const state = page.getByTestId('fetch-state');
  await expect(state).toHaveAttribute('data-state', 'done');
  await expect(state).toContainText(/Fetched 8 entries in \d+ pages/);
  await expect(page.getByTestId('staged-total')).toHaveText('Total 8');

  // Filter: new users matching "jsmith".
  const filters = page.getByRole('search', { name: 'Filter the import table' });
  await filters.getByRole('searchbox').fill('jsmith');
  await filters.getByRole('combobox', { name: /^Status/ }).selectOption('new');
  await filters.getByRole('button', { name: 'Apply' }).click();
  await expect(page).toHaveURL(/status=new/);
  await expect(page.getByTestId('staged-total')).toHaveText('Total 1');
  const row = page.getByTestId('staged-table').locator('tr[data-username="jsmith"]');
  await expect(row.getByTestId('staged-status')).toHaveText('new');
  await expect(row.getByTestId('already-exists')).toHaveText('no');

  // Select her, pick the organisation, import.
  await waitForHydration(page, { forms: true });
  await row.getByRole('checkbox', { name: 'Select jsmith' }).check();
  const form = page.getByRole('form', { name: 'Import users' });
  await form.getByRole('checkbox', { name: 'Imported E2E' }).check();
  await form.getByRole('button', { name: 'Import' }).click();
  await expect(page.getByTestId('import-summary')).toHaveText('1 created, 0 updated, 0 unchanged, 0 failed.');
  await expect(page.getByTestId('import-result')).toContainText('jsmith');

  // The table now says she exists (and she is no longer "new").
  await expect(page.getByTestId('staged-total')).toHaveText('Total 0');
  await page.goto('/import?dir=ldap_ha&q=jsmith&status=all');
  const again = page.getByTestId('staged-table').locator('tr[data-username="jsmith"]');
  await expect(again.getByTestId('already-exists')).toHaveText('yes');
  await expect(again.getByTestId('staged-status')).toHaveText('imported');

  // She is a Bindery user of that organisation, from LDAP.
  await page.goto('/users?q=jsmith');
  const users = page.getByTestId('users-table');
  await expect(users).toContainText('Imported E2E');
  await expect(users).toContainText('ldap_ha');

  // Leave no directory configuration behind for the other specs.
  const del = await page.request.delete('/api/v1/directories/ldap_ha', { headers });
  expect(del.status()).toBe(204);
});
