#!/usr/bin/env bash
# lavapipe-profile.sh: where a kernel's time goes on lavapipe, instruction by
# instruction. lavapipe compiles each WGSL kernel to x86 with LLVM at run
# time, so no symbols exist for it: this samples a running command with perf,
# finds the hottest block of JIT code, disassembles it from the live process
# with gdb, and prints each instruction with its sample count, then the
# samples per mnemonic (where the time goes: FMAs, per-lane loads, blends).
#
# usage: scripts/lavapipe-profile.sh [-w WARM] [-s SECONDS] [-o FILE] -- command args...
#   -w  seconds to let the command start and compile its kernels (default 8)
#   -s  seconds to sample (default 4)
#   -o  annotated disassembly (default lavapipe-profile.txt)
# The command must keep running the kernel of interest for WARM+SECONDS
# seconds (bench kernels -run CASE -time 30s, for instance). Needs perf and
# gdb (apt-get install linux-perf gdb) and perf_event_paranoid <= 2.
set -euo pipefail
warm=8 secs=4 out=lavapipe-profile.txt
while getopts w:s:o: opt; do
  case $opt in
    w) warm=$OPTARG ;; s) secs=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { sed -n '2,16p' "$0"; exit 2; }
for tool in perf gdb python3; do
  command -v $tool >/dev/null || { echo "lavapipe-profile: $tool not found (apt-get install linux-perf gdb python3)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; kill $pid 2>/dev/null || true' EXIT
"$@" >"$tmp/cmd.out" 2>&1 &
pid=$!
sleep "$warm"
kill -0 $pid 2>/dev/null || { echo "lavapipe-profile: the command ended within $warm s:" >&2; tail "$tmp/cmd.out" >&2; exit 1; }
perf record -F 2000 -p $pid -o "$tmp/perf.data" -- sleep "$secs" >/dev/null 2>&1
perf script -i "$tmp/perf.data" -F ip 2>/dev/null | awk '{print $1}' | sort | uniq -c | awk '{print $2, $1}' >"$tmp/ips"
# The hottest 4 KiB page of user code and its neighbours above 0.2% of samples.
read -r lo hi hot total < <(python3 - "$tmp/ips" <<'PY'
import collections, sys
ips = {int(a, 16): int(n) for a, n in (l.split() for l in open(sys.argv[1]))}
pages = collections.Counter()
for a, n in ips.items():
    if a < 1 << 47:  # user space
        pages[a >> 12] += n
total = sum(ips.values())
lo = hi = pages.most_common(1)[0][0]
while pages.get(lo - 1, 0) > total * 0.002: lo -= 1
while pages.get(hi + 1, 0) > total * 0.002: hi += 1
hot = sum(n for a, n in ips.items() if lo <= a >> 12 <= hi)
print(hex(lo << 12), hex((hi + 1) << 12), hot, total)
PY
)
gdb -p $pid -batch -ex "disassemble $lo,$hi" 2>/dev/null | grep -E '^ +0x' | sed 's/<[^>]*>//' >"$tmp/dis"
python3 - "$tmp/ips" "$tmp/dis" "$out" <<'PY'
import collections, sys
ips = {int(a, 16): int(n) for a, n in (l.split() for l in open(sys.argv[1]))}
per_op = collections.Counter()
with open(sys.argv[3], 'w') as f:
    for l in open(sys.argv[2]):
        addr = int(l.split(':')[0].strip(), 16)
        n = ips.get(addr, 0)
        fields = l.split(':', 1)[1].split()
        if fields:
            per_op[fields[0]] += n
        f.write('%6d %s' % (n, l))
for op, n in per_op.most_common(16):
    print('%6d %s' % (n, op))
PY
echo "hottest code $lo-$hi: $hot of $total samples; annotated disassembly in $out"
