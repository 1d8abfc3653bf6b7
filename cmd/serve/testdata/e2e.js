// Drives the viewer in a headless browser for browser_test.go, through the
// driver module of internal/browser (WEBDINO_DRIVER; it picks Chromium or
// Firefox):
//
//   node e2e.js URL OUTDIR [SHORT [GIANT_MODEL]]
//
// It loads the page, which runs the bundled model on the first bundled
// photo, runs it once more for the steady-state time, then twice at short
// side SHORT (if given), clicks a patch to show its similarity, and writes OUTDIR/result.json (the
// arrays the page computed, its timings, the console) and
// OUTDIR/page.png. Failures exit non-zero with the page's error.
'use strict';
const fs = require('fs');
const path = require('path');
const drv = require(process.env.WEBDINO_DRIVER);

const [url, outDir, short, giantModel] = process.argv.slice(2);

// errorChecks feeds the page bad inputs and a photo through the file
// pickers, then opens the page in a tab whose navigator.gpu is removed, and
// returns what the page said each time.
async function errorChecks(b, page, url) {
  const checks = {};
  const expectError = async (sel, file, key) => {
    await page.evaluate(() => { window.webdinoState.error = null; });
    await drv.setFile(page, sel, file);
    await drv.waitFor(page, () => window.webdinoState.error, null, 60000);
    checks[key] = await page.evaluate(() => window.webdinoState.error);
  };
  await expectError('#model-file', { name: 'notes.msgpack', mimeType: 'application/octet-stream', buffer: Buffer.from('hello, not a checkpoint') }, 'notCheckpoint');
  await expectError('#model-file', giantModel, 'giantModel');
  await expectError('#photo-file', { name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not an image at all') }, 'notImage');
  const runs = await page.evaluate(() => window.webdinoState.runs);
  await drv.setFile(page, '#photo-file', path.join(__dirname, '..', '..', '..', 'assets', 'photos', 'astronaut.jpg'));
  await drv.waitFor(page, (n) => window.webdinoState.runs > n || window.webdinoState.error, runs, 120000);
  const r = await page.evaluate(() => ({ error: window.webdinoState.error, w: window.webdinoState.result.width, h: window.webdinoState.result.height }));
  checks.filePicked = r.error || `${r.w}x${r.h}`;
  const tab = await b.newPage();
  await drv.hideWebGPU(tab);
  await tab.goto(url);
  await drv.waitFor(tab, () => window.webdinoState && window.webdinoState.error, null, 30000);
  checks.noWebGPU = await tab.evaluate(() => window.webdinoState.error);
  await tab.close();
  return checks;
}

(async () => {
  const b = await drv.launch({ viewport: { width: 1120, height: 1500 } });
  const page = b.page;
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  let exit = 0;
  try {
    await page.goto(url);
    await drv.waitFor(page, () => {
      const s = window.webdinoState;
      return s && (s.error || (s.runs > 0 && !document.querySelector('#controls[aria-disabled="true"]')));
    }, null, 300000);
    const failed = await page.evaluate(() => window.webdinoState.error);
    if (failed) throw new Error('page: ' + failed);
    const timings = { cold: await page.evaluate(() => window.webdinoState.timings) };
    const runAt = async (side) => {
      const n = await page.evaluate(() => window.webdinoState.runs);
      await page.evaluate((v) => window.webdinoRun(v), side);
      const s = await page.evaluate(() => ({ runs: window.webdinoState.runs, error: window.webdinoState.error, t: window.webdinoState.timings }));
      if (s.error || s.runs !== n + 1) throw new Error(`run at ${side}: ${s.error || 'no result'}`);
      return s.t;
    };
    // The same size again: shaders compiled, the steady-state time.
    timings.warm = await runAt(await page.evaluate(() => window.webdinoState.result.height < window.webdinoState.result.width ? window.webdinoState.result.height : window.webdinoState.result.width));
    if (short) {
      timings.shortCold = await runAt(+short);
      timings.shortWarm = await runAt(+short);
    }
    // Click the patch a quarter of the way across and down the input.
    await page.evaluate(() => { window.webdinoState.similarity = null; });
    const box = await (await page.$('#input-canvas')).boundingBox();
    await page.mouse.click(box.x + box.width / 4, box.y + box.height / 4);
    await drv.waitFor(page, () => window.webdinoState.similarity || window.webdinoState.error, null, 60000);
    const out = await page.evaluate(() => {
      const s = window.webdinoState, r = s.result;
      const arr = (a) => Array.from(a);
      return {
        adapter: s.adapter, model: s.model.config,
        width: r.width, height: r.height, gh: r.gh, gw: r.gw, heads: r.heads, dim: r.dim,
        patches: arr(r.patches), pcaRGB: arr(r.pcaRGB), foreground: arr(r.foreground),
        attn: r.attn.map(arr), similarity: arr(s.similarity.sim), similarityPatch: s.similarity.patch,
      };
    });
    out.timings = timings;
    out.browser = b.version;
    out.userAgent = await page.evaluate(() => navigator.userAgent);
    out.checks = await errorChecks(b, page, url);
    out.console = console_;
    fs.writeFileSync(path.join(outDir, 'result.json'), JSON.stringify(out));
  } catch (err) {
    console.error(String(err && err.stack || err));
    console.error('console:\n' + console_.join('\n'));
    exit = 1;
  } finally {
    await page.screenshot({ path: path.join(outDir, 'page.png'), fullPage: true }).catch(() => {});
    await b.close();
  }
  process.exit(exit);
})();
