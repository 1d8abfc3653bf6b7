// The viewer's page glue: it loads the Go program (build/webdino.wasm), wires
// the controls to the methods of globalThis.webdinoGo (each returns a
// Promise; the GPU work runs on a Go goroutine) and draws what they return.
// For tests, window.webdinoState counts finished runs and holds the last
// result (typed arrays from Go) and error.
'use strict';

const $ = (id) => document.getElementById(id);
const state = (window.webdinoState = { ready: false, runs: 0, result: null, error: null, model: null });
const DISPLAY = 320; // CSS pixels of the longer side of the main panels
let manifest = { models: [], photos: [] };
let patch = 14;
let picked = -1; // the patch whose similarity is shown

function status(msg) { $('status').textContent = msg; }

// WebGPU validation and out-of-memory errors never reach Go (the js backend
// returns nil errors and the device reports them as events), so the page
// listens on the device the Go program requests and fails the action that
// caused them: otherwise a shader the browser rejects or a buffer it could
// not allocate would show silently wrong pictures.
const gpuErrors = [];
if (window.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const dev = await requestDevice.apply(this, args);
    dev.addEventListener('uncapturederror', (e) => gpuErrors.push(e.error.message));
    dev.lost.then((info) => showError(`The WebGPU device was lost (${info.reason || 'unknown'}): ${info.message} Reload the page.`));
    return dev;
  };
}

function checkGPU() {
  if (!gpuErrors.length) return;
  const n = gpuErrors.length, first = gpuErrors[0];
  gpuErrors.length = 0;
  const oom = /out of memory|OutOfMemory|exceeds|limit/i.test(first);
  throw new Error(`WebGPU reported ${n} error(s), so the results are not valid${oom ? ' (the model or the resolution is too large for this device: try a lower resolution or a smaller model)' : ''}. First: ${first}`);
}

function showError(msg) {
  state.error = msg;
  const e = $('error');
  e.textContent = msg;
  e.hidden = !msg;
}

// One action at a time: the controls are disabled until it settles, and
// its error is shown instead of thrown.
let busy = false;
async function act(what, f) {
  if (busy) return;
  busy = true;
  $('controls').setAttribute('aria-disabled', 'true');
  showError('');
  status(what + '…');
  try {
    gpuErrors.length = 0;
    await f();
    checkGPU();
  } catch (err) {
    showError(what + ' failed: ' + (err && err.message ? err.message : err));
    status('Ready.');
  } finally {
    busy = false;
    $('controls').setAttribute('aria-disabled', 'false');
  }
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function loadModel(name, bytes) {
  const m = await webdinoGo.loadModel(name, bytes);
  state.model = m;
  patch = m.patch;
  const s = $('short');
  s.step = patch;
  s.min = 2 * patch;
  s.max = 37 * patch;
  s.value = Math.max(2, Math.round(s.value / patch)) * patch;
  shortLabel();
  const note = m.meta && m.meta.source ? ` — ${m.meta.source}` : '';
  $('model-info').textContent = `${name}: ${m.config}; ${(m.params / 1e6).toFixed(2)} M parameters (${m.source})${note}`;
}

async function setImage(name, bytes) {
  const im = await webdinoGo.setImage(name, bytes);
  $('photo-info').textContent = `${name}: ${im.width}×${im.height}`;
}

function shortLabel() {
  const v = +$('short').value;
  $('short-label').textContent = `short side ${v} px = ${v / patch} patches`;
}

// gridCanvas returns a canvas holding a w x h RGBA image (one pixel per
// patch for the maps), to be scaled up without smoothing.
function gridCanvas(rgba, w, h) {
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  c.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length), w, h), 0, 0);
  return c;
}

function displaySize(r) {
  const s = DISPLAY / Math.max(r.width, r.height);
  return [Math.round(r.width * s), Math.round(r.height * s)];
}

function paint(canvas, w, h, ...layers) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  for (const [src, alpha] of layers) {
    ctx.globalAlpha = alpha;
    ctx.drawImage(src, 0, 0, w, h);
  }
  ctx.globalAlpha = 1;
  return ctx;
}

function markPatch(ctx, r, w, h) {
  if (picked < 0) return;
  const sx = w / r.gw, sy = h / r.gh;
  ctx.strokeStyle = '#0f0';
  ctx.lineWidth = 2;
  ctx.strokeRect((picked % r.gw) * sx, Math.floor(picked / r.gw) * sy, sx, sy);
}

function draw() {
  const r = state.result;
  if (!r) return;
  const [w, h] = displaySize(r);
  const input = gridCanvas(r.input, r.width, r.height);
  markPatch(paint($('input-canvas'), w, h, [input, 1]), r, w, h);
  if (document.querySelector('input[name="pca-mode"]:checked').value === 'blend') {
    // Only the foreground is coloured; the background stays the photo.
    const fg = new Uint8Array(r.pcaRGBA);
    for (let i = 0; i < r.foreground.length; i++) fg[4 * i + 3] = r.foreground[i] ? 255 : 0;
    paint($('pca-canvas'), w, h, [input, 1], [gridCanvas(fg, r.gw, r.gh), +$('pca-alpha').value]);
  } else {
    paint($('pca-canvas'), w, h, [gridCanvas(r.pcaRGBA, r.gw, r.gh), 1]);
  }
  const box = $('attn');
  box.textContent = '';
  const aw = Math.round(w / 2), ah = Math.round(h / 2);
  r.attnRGBA.forEach((rgba, i) => {
    const f = document.createElement('figure');
    const c = document.createElement('canvas');
    paint(c, aw, ah, [gridCanvas(rgba, r.gw, r.gh), 1]);
    const cap = document.createElement('figcaption');
    cap.textContent = i === r.heads ? 'mean over heads' : `head ${i}`;
    f.append(c, cap);
    i === r.heads ? box.prepend(f) : box.append(f);
  });
}

async function drawSimilarity() {
  const r = state.result;
  if (!r || picked < 0) return;
  const s = await webdinoGo.similarity(picked);
  state.similarity = { sim: s.sim, rgba: s.rgba, patch: picked };
  const [w, h] = displaySize(r);
  markPatch(paint($('sim-canvas'), w, h, [gridCanvas(s.rgba, r.gw, r.gh), 1]), r, w, h);
  $('sim-caption').textContent = `Cosine similarity to patch (${picked % r.gw}, ${Math.floor(picked / r.gw)}), from ${Math.min(...s.sim).toFixed(2)} (dark) to 1 (bright)`;
}

async function run() {
  const t0 = performance.now();
  const r = await webdinoGo.run(+$('short').value);
  const total = performance.now() - t0;
  await new Promise((resolve) => setTimeout(resolve, 0)); // let pending GPU error events fire
  checkGPU();
  state.result = r;
  state.runs++;
  if (picked < 0 || picked >= r.gh * r.gw) picked = Math.floor(r.gh / 2) * r.gw + Math.floor(r.gw / 2);
  draw();
  await drawSimilarity();
  const body = $('timings').tBodies[0];
  body.textContent = '';
  const row = (name, ms, bold) => {
    const tr = body.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = ms.toFixed(1);
    if (bold) tr.style.fontWeight = 'bold';
  };
  for (const s of r.steps) row(s.name, s.ms);
  row(`total, seen from the page (run ${state.runs}, ${r.width}×${r.height} input, ${r.gw}×${r.gh} patches)`, total, true);
  state.timings = { steps: r.steps, totalMs: total };
  status(`Ready. ${state.adapter}`);
}

function fillSelect(sel, items) {
  for (const it of items) {
    const o = document.createElement('option');
    o.value = it.file;
    o.textContent = it.name;
    sel.append(o);
  }
}

const modelExt = /\.(msgpack|pth|safetensors)$/i;

function wire() {
  $('model-select').onchange = (e) =>
    act('Loading the model', async () => { await loadModel(e.target.value, await fetchBytes(e.target.value)); await run(); });
  $('photo-select').onchange = (e) =>
    act('Running', async () => { await setImage(e.target.value, await fetchBytes(e.target.value)); await run(); });
  const fromFile = (file) => {
    if (!file) return;
    const isModel = modelExt.test(file.name);
    act(isModel ? 'Loading the model' : 'Running', async () => {
      // A model is copied into WebAssembly memory (4 GB at most) and decoded
      // there: its head says first whether that can work.
      if (isModel) await webdinoGo.checkModel(file.name, new Uint8Array(await file.slice(0, 65536).arrayBuffer()), file.size);
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (isModel) await loadModel(file.name, bytes);
      else await setImage(file.name, bytes);
      await run();
    });
  };
  $('model-file').onchange = (e) => fromFile(e.target.files[0]);
  $('photo-file').onchange = (e) => fromFile(e.target.files[0]);
  document.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    fromFile(e.dataTransfer.files[0]);
  });
  $('short').oninput = shortLabel;
  $('short').onchange = () => act('Running', run);
  $('run').onclick = () => act('Running', run);
  for (const el of document.querySelectorAll('input[name="pca-mode"], #pca-alpha')) el.oninput = draw;
  $('input-canvas').onclick = (e) => {
    const r = state.result;
    if (!r || busy) return;
    const c = e.currentTarget, b = c.getBoundingClientRect();
    const x = Math.floor(((e.clientX - b.left) / b.width) * r.gw);
    const y = Math.floor(((e.clientY - b.top) / b.height) * r.gh);
    picked = Math.min(r.gh - 1, Math.max(0, y)) * r.gw + Math.min(r.gw - 1, Math.max(0, x));
    draw();
    drawSimilarity().catch((err) => showError(err.message));
  };
  // For tests and the console: run at a given short side.
  window.webdinoRun = async (short) => {
    if (short) { $('short').value = short; shortLabel(); }
    await act('Running', run);
  };
}

// noWebGPUHint says what a browser without navigator.gpu can do about it.
function noWebGPUHint(ua) {
  if (/Firefox\//.test(ua) && /Linux/.test(ua) && !/Android/.test(ua)) {
    return 'Firefox on Linux ships WebGPU switched off: open about:config, set dom.webgpu.enabled to true and reload this page (Firefox ESR 153 runs it so).';
  }
  return 'See “Which browsers run this” below: a current Chrome or Edge on Windows, macOS or ChromeOS, Safari 26, or Firefox 141+ on Windows work out of the box.';
}

async function boot() {
  if (!window.isSecureContext) {
    showError('This page is not a secure context, so the browser hides WebGPU: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/ (or over https).');
    return;
  }
  if (!navigator.gpu) {
    showError(`This browser does not expose WebGPU (navigator.gpu is missing). ${noWebGPUHint(navigator.userAgent)}`);
    status('WebGPU unavailable.');
    return;
  }
  if (typeof Go !== 'function') {
    showError('build/wasm_exec.js is missing: this server holds no wasm build. Run `make wasm` (or `make serve`) and restart cmd/serve.');
    return;
  }
  status('Loading the WebAssembly program…');
  const go = new Go();
  const ready = new Promise((resolve) => (window.webdinoReady = resolve));
  let res;
  try {
    res = await WebAssembly.instantiateStreaming(fetch('build/webdino.wasm'), go.importObject);
  } catch (err) {
    showError(`Could not load build/webdino.wasm (${err.message}): run \`make wasm\` and restart cmd/serve.`);
    return;
  }
  // cogentcore/webgpu's js backend reads the wasm memory through globalThis.wasm.
  globalThis.wasm = res;
  go.run(res.instance).then(() => showError('The Go program exited; reload the page.'));
  await ready;
  try {
    const dev = await webdinoGo.open();
    state.adapter = `WebGPU adapter: ${dev.adapter || 'unnamed'} (buffers up to ${dev.maxBufferMB} MB)`;
  } catch (err) {
    showError(err.message);
    status('WebGPU unavailable.');
    return;
  }
  manifest = await (await fetch('manifest.json')).json();
  fillSelect($('model-select'), manifest.models);
  fillSelect($('photo-select'), manifest.photos);
  $('credits').textContent = manifest.photos.map((p) => `${p.name} (${p.licence})`).join('; ');
  wire();
  state.ready = true;
  await act('Loading the demo model', async () => {
    const m = manifest.models[0], p = manifest.photos[0];
    await loadModel(m.file, await fetchBytes(m.file));
    await setImage(p.file, await fetchBytes(p.file));
    await run();
  });
}

boot();
