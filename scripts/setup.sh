#!/usr/bin/env bash
# Installs what webdino's tests and demo need on Debian 12, idempotently.
# - a Vulkan loader and, when no GPU driver is present, Mesa lavapipe 25 from
#   bookworm-backports (Debian 12's own Mesa 22 returned zeros from large dispatches);
# - the Fashion-MNIST data set package used by the demo and the tests;
# - gcc (cgo: wgpu-native and GLFW link through C), the X11 and OpenGL headers
#   and pkg-config that cmd/view's window (GLFW,
#   compiled from C through cgo by go-gl/glfw) needs to build on Linux.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

backports=/etc/apt/sources.list.d/webdino-backports.sources
mesa_ok() {
  have_pkg mesa-vulkan-drivers || return 1
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)
  dpkg --compare-versions "$v" ge 25 
}

if ! have_pkg libvulkan1; then need+=(libvulkan1); fi
if ! have_pkg dataset-fashion-mnist; then need+=(dataset-fashion-mnist); fi
if ! mesa_ok; then need+=(mesa-vulkan-drivers); fi
for p in gcc libc6-dev pkg-config libgl1-mesa-dev libx11-dev libxrandr-dev libxcursor-dev libxinerama-dev libxi-dev libxxf86vm-dev; do
  if ! have_pkg "$p"; then need+=("$p"); fi
done

if [ ${#need[@]} -eq 0 ]; then
  echo "setup: everything present"
  exit 0
fi

echo "setup: installing ${need[*]}"
if [ ! -f "$backports" ]; then
  uri=$(grep -h -m1 '^URIs:.*debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
  uri=${uri:-http://deb.debian.org/debian}
  $sudo_cmd tee "$backports" >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
# Plain packages from the main suite in one go, Mesa from backports (Mesa 22 is broken here).
plain=()
for p in "${need[@]}"; do
  if [ "$p" = mesa-vulkan-drivers ]; then
    $sudo_cmd apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    plain+=("$p")
  fi
done
if [ ${#plain[@]} -gt 0 ]; then
  $sudo_cmd apt-get install -y -qq "${plain[@]}" >/dev/null
fi
echo "setup: done"
