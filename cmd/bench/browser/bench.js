// Drives `bench browser` in a headless browser, through the driver module
// of internal/browser (WEBDINO_DRIVER; it picks Chromium or Firefox):
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
const path = require('path');
const drv = require(process.env.WEBDINO_DRIVER);

const [url, outFile, short, iters, model, photo, ep] = process.argv.slice(2);
const LONG = 900000; // ms: ViT-S on SwiftShader with 2 shared cores is slow

async function webdino(page, res) {
  await page.goto(url);
  const waitRun = (n) => drv.waitFor(page, (n) => {
    const s = window.webdinoState;
    return s && (s.error || (s.runs > n && !document.querySelector('#controls[aria-disabled="true"]')));
  }, n, LONG);
  const check = async (what) => {
    const e = await page.evaluate(() => window.webdinoState.error);
    if (e) throw new Error(`${what}: ${e}`);
  };
  await waitRun(0);
  await check('page start');
  res.adapter = await page.evaluate(() => window.webdinoState.adapter);
  for (const [sel, file] of [['#model-file', model], ['#photo-file', photo]]) {
    const n = await page.evaluate(() => window.webdinoState.runs);
    await drv.setFile(page, sel, file);
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
  await drv.waitFor(page, () => window.ortResult, null, LONG);
  return page.evaluate(() => window.ortResult);
}

(async () => {
  const b = await drv.launch();
  const res = { browser: b.version, console: [], ort: [] };
  let exit = 0;
  try {
    // Each side in its own tab, closed before the next: the two never share
    // the GPU process's memory or time.
    let page = await b.newPage();
    page.on('console', (m) => res.console.push(`webdino ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => res.console.push(`webdino pageerror: ${e.message}`));
    await webdino(page, res);
    await page.close();
    await b.page.close(); // the launch's own blank tab
    if (ep) {
      for (const e of ep === 'webgpu' ? ['webgpu', 'wasm'] : [ep]) {
        page = await b.newPage();
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
    await b.close();
  }
  process.exit(exit);
})();
