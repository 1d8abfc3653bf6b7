#!/usr/bin/env bash
# Installs a current lavapipe (Mesa from Debian 13's trixie-backports, with its
# own glibc, LLVM and Vulkan loader) into a private folder, for machines
# without a GPU. Debian 12's newest Mesa (25.0, bookworm-backports) gathers
# every storage-buffer load lane by lane; Mesa 26 loads a uniform address
# once, which runs webdino's products about twice as fast and its test suite
# several times faster (docs/lavapipe.md, session 18). Nothing is installed
# system-wide: scripts/lavapipe-exec starts a program through this folder's
# dynamic loader, so the program and only it sees the newer libraries.
#
# Idempotent; skipped where a GPU is present (/dev/nvidia0, /dev/dri/renderD*)
# or with WEBDINO_LAVAPIPE=system. A failed download only warns: the tests
# then run on the system's lavapipe, as before. The folder:
# ${WEBDINO_LAVAPIPE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/webdino/lavapipe}.
set -euo pipefail

dir=${WEBDINO_LAVAPIPE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/webdino/lavapipe}
suite=trixie-backports

if [ "${WEBDINO_LAVAPIPE:-}" = system ]; then exit 0; fi
if [ -f "$dir/ready" ]; then exit 0; fi
if [ -e /dev/nvidia0 ] || compgen -G '/dev/dri/renderD*' >/dev/null; then
  exit 0
fi

warn() { echo "setup: the private lavapipe was not installed ($1); tests run on the system's Mesa" >&2; exit 0; }

uri=$(grep -h -m1 '^URIs:.*debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
uri=${uri:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/parts" "$work/prefs"
touch "$work/status"
cat >"$work/parts/trixie.sources" <<SRC
Types: deb
URIs: $uri
Suites: trixie $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# apt on a private state: an empty dpkg status, so it resolves the whole
# dependency closure (glibc included) of a Debian 13 system, and verifies the
# suites' signatures with the keyring Debian 12 ships (it holds trixie's keys).
apt_opts=(-qq -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=$work/status"
  -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/parts"
  -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$work/prefs"
  -o "Dir::Cache=$work" -o "Dir::Cache::archives=$work/archives"
  -o "APT::Install-Recommends=false" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")
echo "setup: fetching lavapipe from $suite into $dir"
apt-get "${apt_opts[@]}" update >/dev/null 2>&1 || warn "apt-get update of $suite failed"
apt-get "${apt_opts[@]}" install -y --download-only -t "$suite" mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 ||
  warn "apt-get could not fetch mesa-vulkan-drivers from $suite"

stage="$dir.partial"
rm -rf "$stage"
mkdir -p "$stage"
for deb in "$work"/archives/*.deb; do dpkg-deb -x "$deb" "$stage"; done
lib=$(dirname "$(find "$stage/usr/lib" -name 'libvulkan_lvp.so' | head -1)")
[ -f "$lib/libvulkan_lvp.so" ] || warn "no libvulkan_lvp.so in the packages"
# Only lavapipe is wanted: the other Vulkan drivers and layers are 100+ MB.
find "$lib" -maxdepth 1 \( -name 'libvulkan_*.so' ! -name 'libvulkan_lvp.so' -o -name 'libVkLayer_*' \) -delete
rm -rf "$stage/usr/share/doc" "$stage/usr/share/man" "$stage/usr/share/locale"
loader=$(find "$lib" -maxdepth 1 -name 'ld-linux*.so*' | head -1)
[ -n "$loader" ] || warn "no dynamic loader in the packages"
"$loader" --library-path "$lib" /bin/true || warn "$loader does not run here"
version=$(dpkg-deb -f "$work"/archives/mesa-vulkan-drivers_*.deb Version)
printf 'mesa %s\nlib %s\nloader %s\n' "$version" "${lib#"$stage"}" "${loader#"$stage"}" >"$stage/ready"
rm -rf "$dir"
mv "$stage" "$dir"
echo "setup: lavapipe from Mesa $version ready in $dir"
