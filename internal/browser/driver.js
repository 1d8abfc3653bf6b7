// The browser half of package browser: the scripts that drive the viewer
// (cmd/serve/testdata/e2e.js, cmd/bench/browser/bench.js) load this module
// from WEBDINO_DRIVER and never touch playwright or puppeteer themselves.
//
// WEBDINO_BROWSER picks the browser, WEBDINO_BROWSER_BIN its executable:
// - chromium: Debian's Chromium through playwright-core; headless WebGPU
//   runs on SwiftShader and needs --enable-unsafe-webgpu;
// - firefox: Debian's Firefox ESR through puppeteer-core over WebDriver BiDi
//   (playwright's BiDi client asks for commands ESR lacks); Firefox on Linux
//   ships WebGPU switched off, so dom.webgpu.enabled is set, and the ignored
//   blocklist lets it use a software Vulkan driver (lavapipe).
// No browser is ever downloaded.
//
// launch({ viewport }) returns { page, newPage(), close(), version }; the
// rest hide where the two libraries' calls differ: waitFor(page, fn, arg,
// timeout) polls fn(arg) in the page until it is truthy, setFile(page,
// selector, file) puts a path or a { name, mimeType, buffer } in a file
// input, hideWebGPU(page) removes navigator.gpu from the page's next
// documents.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const chromiumFlags = [
  '--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

function chromium(bin) {
  const { chromium: pw } = require('playwright-core');
  return {
    async launch({ viewport } = {}) {
      const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'webdino-chromium-'));
      const ctx = await pw.launchPersistentContext(userDir, {
        executablePath: bin, headless: true, args: chromiumFlags, ...(viewport ? { viewport } : {}),
      });
      return {
        page: ctx.pages()[0] || (await ctx.newPage()),
        newPage: () => ctx.newPage(),
        version: ctx.browser() ? `Chromium ${ctx.browser().version()}` : 'Chromium',
        close: async () => { await ctx.close(); fs.rmSync(userDir, { recursive: true, force: true }); },
      };
    },
    waitFor: (page, fn, arg, timeout) => page.waitForFunction(fn, arg, { timeout, polling: 200 }),
    setFile: (page, sel, file) => page.setInputFiles(sel, file),
    hideWebGPU: (page) => page.addInitScript(() => { delete Navigator.prototype.gpu; }),
  };
}

function firefox(bin) {
  const puppeteer = require('puppeteer-core');
  let uploads; // the files given as buffers: puppeteer uploads by path
  return {
    async launch({ viewport } = {}) {
      const browser = await puppeteer.launch({
        browser: 'firefox', executablePath: bin, headless: true, defaultViewport: viewport || null,
        extraPrefsFirefox: { 'dom.webgpu.enabled': true, 'gfx.webgpu.ignore-blocklist': true },
      });
      uploads = fs.mkdtempSync(path.join(os.tmpdir(), 'webdino-upload-'));
      return {
        page: await browser.newPage(),
        newPage: () => browser.newPage(),
        version: await browser.version(),
        close: async () => { await browser.close(); fs.rmSync(uploads, { recursive: true, force: true }); },
      };
    },
    waitFor: (page, fn, arg, timeout) => page.waitForFunction(fn, { timeout, polling: 200 }, arg),
    async setFile(page, sel, file) {
      if (typeof file !== 'string') {
        fs.writeFileSync(path.join(uploads, file.name), file.buffer);
        file = path.join(uploads, file.name);
      }
      await (await page.$(sel)).uploadFile(file);
    },
    hideWebGPU: (page) => page.evaluateOnNewDocument(() => { delete Navigator.prototype.gpu; }),
  };
}

const name = process.env.WEBDINO_BROWSER || 'chromium';
const drivers = { chromium, firefox };
if (!drivers[name]) throw new Error(`WEBDINO_BROWSER=${name}: want chromium or firefox`);
module.exports = { name, ...drivers[name](process.env.WEBDINO_BROWSER_BIN) };
