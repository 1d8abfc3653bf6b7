# webdino: two commands on a fresh Debian 12 machine.
#   make demo   the main job (see README)
#   make test   installs what the tests need, then runs them all
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
# wgpu-native wants a runtime dir; lavapipe only warns without one.
export XDG_RUNTIME_DIR ?= /tmp/webdino-runtime
# Test binaries run through this: on a machine without a GPU it starts them
# on the current lavapipe that setup installs privately
# (scripts/setup-lavapipe.sh), twice as fast as Debian 12's; elsewhere it runs
# them as they are. webdino's programs restart there by themselves
# (gpu/lavapipe).
RUN := $(CURDIR)/scripts/lavapipe-exec

.PHONY: demo test setup setup-browser bench vet wasm-check wasm serve

setup:
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	@bash scripts/setup.sh
	@bash scripts/setup-lavapipe.sh

# Chromium and playwright-core for the browser end-to-end test.
setup-browser:
	@bash scripts/setup-browser.sh

# Trains the demo model on Fashion-MNIST for about DEMO_MINUTES on whatever
# device runs it (four epochs on two CPU cores without a GPU, hundreds on a
# large GPU): k-NN accuracy, checkpoint, plots and PCA pictures in runs/demo.
# More: make demo DEMO_MINUTES=40, or a fixed length: DEMO_FLAGS="--epochs 20".
DEMO_MINUTES ?= 10
demo: setup
	go run ./cmd/train --out runs/demo $(if $(findstring --epochs,$(DEMO_FLAGS)),,--minutes $(DEMO_MINUTES)) $(DEMO_FLAGS)

bench: setup
	go run ./cmd/bench kernels -json

vet:
	go vet ./...

wasm-check:
	GOOS=js GOARCH=wasm go build ./gpu/... ./nn/... ./shaders/... ./ckpt/... ./npy/... ./data/... ./eval/... ./train/... ./embed/... ./viz/... ./wasm/... ./assets/...

# The browser test must run, not skip, under `make test`.
test: setup setup-browser vet wasm-check
	WEBDINO_REQUIRE_BROWSER=1 go test -exec $(RUN) -count=1 -timeout 30m ./...

# The browser viewer: the wasm build goes into assets/build, which cmd/serve
# embeds (so `make wasm` must run before building cmd/serve).
wasm:
	GOOS=js GOARCH=wasm go build -trimpath -ldflags="-s -w" -o assets/build/webdino.wasm ./wasm
	gzip -9 -n -k -f assets/build/webdino.wasm
	cp "$$(go env GOROOT)/lib/wasm/wasm_exec.js" assets/build/wasm_exec.js

serve: wasm
	go run ./cmd/serve $(SERVE_FLAGS)
