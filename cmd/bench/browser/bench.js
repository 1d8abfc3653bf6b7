// Drives `bench browser` in headless Chromium (playwright-core, no
// downloaded browser, the flags of cmd/serve/testdata/e2e.js):
//
//   node bench.js URL OUT SHORT ITERS MODEL PHOTO [EP]
//
// It opens the viewer at URL, loads the checkpoint MODEL and the photo PHOTO
// through the page's file pickers, runs the model at short side SHORT once
// as a warm-up and ITERS more times, and keeps the page's own timing of each
// step. Then, if EP is given, it opens URL/bench/ort.html, the same model in
// onnxruntime-web with that execution provider; if EP is webgpu and it
// fails, it tries wasm. OUT gets one JSON object; failures exit non-zero.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, outFile, short, iters, model, photo, ep] = process.argv.slice(2);
const chromiumPath = process.env.WEBDINO_CHROMIUM || '/usr/bin/chromium';
const LONG = 900000; // ms: ViT-S on SwiftShader with 2 shared cores is slow

async function webdino(page, res) {
  await page.goto(url);
  const waitRun = (n) => page.waitForFunction((n) => {
    const s = window.webdinoState;
    return s && (s.error || (s.runs > n && !document.querySelector('#controls[aria-disabled="true"]')));
  }, n, { timeout: LONG, polling: 200 });
  const check = async (what) => {
    const e = await page.evaluate(() => window.webdinoState.error);
    if (e) throw new Error(`${what}: ${e}`);
  };
  await waitRun(0);
  await check('page start');
  res.adapter = await page.evaluate(() => window.webdinoState.adapter);
  for (const [sel, file] of [['#model-file', model], ['#photo-file', photo]]) {
    const n = await page.evaluate(() => window.webdinoState.runs);
    await page.setInputFiles(sel, file);
    await waitRun(n);
    await check(path.basename(file));
  }
  res.model = await page.evaluate(() => window.webdinoState.model.config);
  const runAt = async () => {
    await page.evaluate((v) => window.webdinoRun(v), +short);
    await check(`run at ${short}`);
    return page.evaluate(() => ({ t: window.webdinoState.timings, w: window.webdinoState.result.width, h: window.webdinoState.result.height }));
  };
  const warm = await runAt(); // compiles the shaders for this size
  res.input = [warm.h, warm.w];
  res.warmup = warm.t;
  res.runs = [];
  for (let i = 0; i < +iters; i++) res.runs.push((await runAt()).t);
}

async function onnx(page, ep) {
  await page.goto(`${url}bench/ort.html?ep=${ep}&size=${short}&iters=${iters}`);
  await page.waitForFunction(() => window.ortResult, null, { timeout: LONG, polling: 500 });
  return page.evaluate(() => window.ortResult);
}

(async () => {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'webdino-bench-profile-'));
  const ctx = await chromium.launchPersistentContext(userDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
  const res = { browser: ctx.browser() ? ctx.browser().version() : '', console: [], ort: [] };
  let exit = 0;
  try {
    // Each side in its own tab, closed before the next: the two never share
    // the GPU process's memory or time.
    let page = await ctx.newPage();
    page.on('console', (m) => res.console.push(`webdino ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => res.console.push(`webdino pageerror: ${e.message}`));
    await webdino(page, res);
    await page.close();
    for (const p of ctx.pages()) await p.close();
    if (ep) {
      for (const e of ep === 'webgpu' ? ['webgpu', 'wasm'] : [ep]) {
        page = await ctx.newPage();
        page.on('console', (m) => res.console.push(`ort ${e} ${m.type()}: ${m.text()}`));
        page.on('pageerror', (err) => res.console.push(`ort ${e} pageerror: ${err.message}`));
        const r = await onnx(page, e);
        await page.close();
        res.ort.push(r);
        if (!r.error) break;
      }
    }
  } catch (err) {
    res.error = String(err && err.stack || err);
    exit = 1;
  } finally {
    fs.writeFileSync(outFile, JSON.stringify(res));
    await ctx.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
  process.exit(exit);
})();
