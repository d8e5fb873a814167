#!/usr/bin/env bash
# llama.cpp's llama-server (and llama-quantize) for the GGUF tests and `specd bench peer`, taken
# from Debian unstable's llama.cpp-tools package without installing it: the packages and the C
# library they were built against are unpacked into a folder of their own, and the binaries run
# through that C library's loader, so the system's packages and apt configuration stay as they are.
#
#   eval "$(bash scripts/llama-server-debian.sh [DIR])"
#
# prints `export` lines for LLAMA_SERVER, LLAMA_QUANTIZE and GGML_BACKEND_PATH (the CPU backend for
# this processor). DIR defaults to $TMPDIR/specd-llama-server; a DIR that already holds the
# binaries is reused. Exits non-zero with one line on stderr when no Debian mirror is configured or
# the download fails.
set -euo pipefail
dir=${1:-${TMPDIR:-/tmp}/specd-llama-server}
root=$dir/root
lib=$root/usr/lib/x86_64-linux-gnu
packages=(llama.cpp-tools libllama0 libggml0 libc6 libstdc++6 libgcc-s1 libgomp1 libssl3t64)

fetch() {
  local mirror
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  if [ -z "$mirror" ]; then echo "llama-server-debian: no Debian mirror in /etc/apt" >&2; exit 1; fi
  mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial" "$dir/debs" "$root"
  echo "deb $mirror sid main" > "$dir/sid.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$dir/sid.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$dir/state/lists" -o "Dir::Cache=$dir/cache" -o Acquire::Languages=none)
  apt-get "${apt_opts[@]}" update -qq >&2
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download "${packages[@]}" >&2)
  local deb
  for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
}

[ -x "$root/usr/bin/llama-server" ] || fetch

# ggml ships one CPU backend per instruction set; take the most capable one this CPU runs.
cpu_flags=$(grep -m 1 '^flags' /proc/cpuinfo || true)
backend=x64
has() { [[ " $cpu_flags " == *" $1 "* ]]; }
for candidate in haswell:avx2 skylakex:avx512f icelake:avx512_vnni zen4:avx512_bf16; do
  name=${candidate%%:*}
  [ -f "$lib/ggml/backends0/libggml-cpu-$name.so" ] && has "${candidate#*:}" && backend=$name
done
loader="$lib/ld-linux-x86-64.so.2 --library-path $lib:$lib/llama:$lib/ggml/backends0"
echo "export LLAMA_SERVER='$loader $root/usr/bin/llama-server'"
echo "export LLAMA_QUANTIZE='$loader $root/usr/bin/llama-quantize'"
echo "export GGML_BACKEND_PATH='$lib/ggml/backends0/libggml-cpu-$backend.so'"
