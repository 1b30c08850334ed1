// Live deprovisioning (issue 17 §2): with the Sync card's "Live
// deprovisioning" on, the card and the Dashboard show the change stream's
// state; a user deleted from the directory loses their API token within
// seconds, with no sync run started, and the disable is listed on the Sync
// runs page as a run of kind `live`.

import { LdapPage } from './fixtures/ldap-page';
import { waitForHydration } from './fixtures/hydration';
import { modifyDirectory, saveAsLdapHa, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { BASE_URL } from './fixtures/env';
import { expect, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
  let ldif = `dn: ou=e2elive,${d.base_dn}\nchangetype: add\nobjectClass: organizationalUnit\nou: e2elive\n\n`;
  for (const u of ['live1', 'live2']) {
    ldif += `dn: uid=${u},ou=e2elive,${d.base_dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: ${u}\ncn: ${u}\nsn: Live\nmail: ${u}@example.com\nuserPassword: Live-Password-1\n\n`;
  }
  modifyDirectory(d, ldif);
});
test.afterAll(() => {
  stopDirectory(d);
});

test('live deprovisioning: its state on the Sync card and the Dashboard; a deleted user is refused within seconds', async ({
  adminPage: page,
  playwright,
}) => {
  test.slow();
  const headers = { Origin: BASE_URL };
  await saveAsLdapHa(page.request, d, BASE_URL, { search_ous: `ou=e2elive,${d.base_dn}`, attr_map: '{"username":"uid","name":"cn","email":"mail"}' });

  try {
    // One sync (disabling off: LDAP HA keeps other specs' users) links
    // live1 and live2; then live1 gets an API token.
    const first = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: { disable_missing: false } });
    expect(first.status(), await first.text()).toBe(200);
    const started = await page.request.post('/api/v1/directories/ldap_ha/sync', { headers, data: {} });
    expect(started.status(), await started.text()).toBe(202);
    const syncId = (await started.json()).id as number;
    await expect
      .poll(async () => (await (await page.request.get(`/api/v1/sync/runs/${syncId}`)).json()).run.state, { timeout: 30_000 })
      .toBe('done');
    const auth = await page.request.post('/api/v1/authn/ldap/live1/authenticate', { data: { password: 'Live-Password-1' } });
    expect(auth.status(), await auth.text()).toBe(200);
    const token = (await auth.json()).token as string;
    // A client of its own: the page's requests carry the admin's session cookie.
    const client = await playwright.request.newContext({ baseURL: BASE_URL });
    const me = () => client.get('/api/v1/me', { headers: { Authorization: `Bearer ${token}` } });
    expect((await me()).status()).toBe(200);

    // Test connection detects syncrepl, which live deprovisioning needs; the
    // Sync card turns it on (with disabling, which it needs).
    const ldap = new LdapPage(page, 'ldap-ha');
    await ldap.goto();
    await ldap.testConnection();
    await expect(ldap.probeReport.getByTestId('delta-support')).toContainText('syncrepl');
    await page.reload();
    await waitForHydration(page, { forms: true });
    const card = page.getByRole('form', { name: 'Sync settings' });
    // What Test connection found for live mode, before it is turned on.
    await expect(card.getByTestId('live-available')).toHaveText(
      'Live deprovisioning: available (syncrepl refreshAndPersist): disables and deletions within seconds.',
    );
    await card.locator('input[name="disable_missing"]').check();
    await card.locator('input[name="threshold_percent"]').fill('100');
    await card.locator('input[name="live"]').check();
    await card.getByRole('button', { name: 'Save sync settings' }).click();
    await expect(card.getByRole('status')).toHaveText('Saved.');

    // The stream's state, on the card and on the Dashboard.
    await expect
      .poll(async () => (await (await page.request.get('/api/v1/directories/ldap_ha/sync/live')).json()).connected, { timeout: 30_000 })
      .toBe(true);
    await page.reload();
    const liveLine = page.getByRole('form', { name: 'Sync settings' }).getByTestId('live-streams');
    await expect(liveLine).toContainText(`LDAP HA live stream: connected to ${d.ldap_url}`);
    // The method the stream uses; syncrepl sees disables and deletions, so nothing is listed as unseen.
    await expect(liveLine).toContainText('; syncrepl refreshAndPersist');
    await expect(liveLine.getByTestId('live-unseen')).toHaveCount(0);
    await page.goto('/');
    await expect(page.getByTestId('live-streams')).toContainText('LDAP HA live stream: connected to');

    // Deleted in the directory: the token is refused within 10 s.
    const before = Date.now();
    modifyDirectory(d, `dn: uid=live1,ou=e2elive,${d.base_dn}\nchangetype: delete\n`);
    const stream = async () => (await page.request.get('/api/v1/directories/ldap_ha/sync/live')).text();
    await expect
      .poll(async () => (await me()).status(), { timeout: 10_000, intervals: [100] })
      .toBe(401)
      .catch(async (e) => {
        throw new Error(`the token was not refused within 10 s; the stream: ${await stream()}\n${e}`);
      });
    console.log(`live deprovisioning (Playwright): token refused ${Date.now() - before} ms after the delete`);

    // Listed as a live run; no sync run started after ours.
    await page.goto('/sync/runs');
    const runs = page.getByTestId('sync-runs');
    const newest = runs.locator('tr[data-run]').first();
    await expect(newest.getByTestId('run-kind')).toHaveText('live');
    const liveId = Number(await newest.getAttribute('data-run'));
    expect(liveId).toBeGreaterThan(syncId);
    await expect(runs.locator('tr[data-run]').nth(1)).toHaveAttribute('data-run', String(syncId));
    await newest.getByRole('link', { name: `#${liveId}` }).click();
    await expect(page.getByRole('heading', { level: 1 })).toContainText(`Live deprovisioning run #${liveId}`);
    await expect(page.locator('main')).toContainText('live1');
  } finally {
    // The other specs share LDAP HA: its sync settings back to the
    // defaults (live and disabling off), whatever happened above.
    const off = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: {} });
    expect(off.status(), await off.text()).toBe(200);
  }
});
