#!/usr/bin/env bash
# Installs what the browser end-to-end test (cmd/serve/browser_test.go) needs
# on Debian 12, idempotently:
# - Debian's chromium (WebGPU through SwiftShader with --enable-unsafe-webgpu)
#   and firefox-esr (WebGPU through wgpu on lavapipe with dom.webgpu.enabled);
# - their drivers from npm, playwright-core for Chromium and puppeteer-core
#   for Firefox (over WebDriver BiDi; playwright's BiDi client needs newer
#   commands than ESR has), neither of which downloads a browser, into
#   $WEBDINO_BROWSER_DIR (default ~/.cache/webdino/browser), where
#   internal/browser looks for them;
# - onnxruntime-web from npm into the same place, the baseline of
#   `go run ./cmd/bench browser` (the same model in ONNX Runtime's WebGPU
#   execution provider, in the same browser).
set -euo pipefail

dir=${WEBDINO_BROWSER_DIR:-$HOME/.cache/webdino/browser}
playwright_version=1.65.1
puppeteer_version=25.16.0
ort_version=1.30.0

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

need=()
if ! have_pkg chromium; then need+=(chromium); fi
if ! have_pkg firefox-esr; then need+=(firefox-esr); fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then need+=(nodejs npm); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-browser: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Each npm package only when missing.
pkgs=()
if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then pkgs+=("playwright-core@$playwright_version"); fi
if [ ! -f "$dir/node_modules/puppeteer-core/package.json" ]; then pkgs+=("puppeteer-core@$puppeteer_version"); fi
if [ ! -f "$dir/node_modules/onnxruntime-web/package.json" ]; then pkgs+=("onnxruntime-web@$ort_version"); fi
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "setup-browser: chromium, firefox-esr, playwright-core, puppeteer-core and onnxruntime-web present"
  exit 0
fi
echo "setup-browser: installing ${pkgs[*]} into $dir"
mkdir -p "$dir"
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD, PUPPETEER_SKIP_DOWNLOAD: the -core
# packages download nothing, but say it anyway so that no hook ever tries.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
  --prefix "$dir" "${pkgs[@]}" >/dev/null
echo "setup-browser: done"
