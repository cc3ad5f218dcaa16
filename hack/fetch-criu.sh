#!/usr/bin/env bash
# CRIU 4.1.1 (the checkpoint/restore peer of the memory benchmark) from Debian 13's archive,
# unpacked into a private directory and run with its own glibc through its own dynamic loader.
# Debian 12's criu 3.17 fails `criu check` on this kernel ("Unexpected rt vDSO area bounds").
# Nothing is installed into the system: apt runs against a private sources list, state and cache,
# and the .debs are unpacked with dpkg-deb -x. Prints the path of a wrapper that runs criu.
#   ~/.cache/edgeweave/criu-4.1.1/{apt/,debs/,root/,criu}
set -euo pipefail
CRIU_VERSION="${CRIU_VERSION:-4.1.1}"
SUITE="${CRIU_SUITE:-trixie}"
BASE="${EDGEWEAVE_CACHE:-$HOME/.cache/edgeweave}/criu-${CRIU_VERSION}"
WRAP="$BASE/criu"
if [[ -x "$WRAP" && -f "$BASE/.ok" ]]; then
  echo "$WRAP"
  exit 0
fi
APT="$BASE/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/etc/preferences.d" "$APT/etc/sources.list.d" \
  "$BASE/debs" "$BASE/root"
: > "$APT/status"
# The archive this machine already uses (read from its own sources), with the suite swapped.
URI="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
[[ -n "$URI" ]] || URI="$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
[[ -n "$URI" ]] || { echo "fetch-criu: no Debian archive found in this machine's apt sources" >&2; exit 1; }
KEY=/usr/share/keyrings/debian-archive-${SUITE}-stable.gpg
[[ -f "$KEY" ]] || KEY=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$KEY,/usr/share/keyrings/debian-archive-${SUITE}-automatic.gpg] $URI $SUITE main" \
  > "$APT/etc/sources.list"
OPTS=(-o "Dir::Etc=$APT/etc" -o "Dir::Etc::SourceList=$APT/etc/sources.list"
      -o "Dir::Etc::SourceParts=$APT/etc/sources.list.d" -o "Dir::Etc::PreferencesParts=$APT/etc/preferences.d"
      -o "Dir::State=$APT" -o "Dir::State::Lists=$APT/lists" -o "Dir::State::status=$APT/status"
      -o "Dir::Cache=$APT/cache" -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64"
      -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -o "APT::Get::List-Cleanup=0")
apt-get "${OPTS[@]}" -q update >&2
# criu's run-time closure (no recommends), less what only its Python tools need.
mapfile -t PKGS < <(apt-cache "${OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | grep -v '^<' | grep -Ev '^(python3|libpython|perl|debconf|dpkg|tzdata|media-types|readline-common|netbase|install-info)' | sort -u)
apt-cache "${OPTS[@]}" show "criu=${CRIU_VERSION}*" >/dev/null 2>&1 || \
  { echo "fetch-criu: criu ${CRIU_VERSION} not in ${SUITE}: $(apt-cache "${OPTS[@]}" policy criu | sed -n 3p)" >&2; exit 1; }
(cd "$BASE/debs" && apt-get "${OPTS[@]}" -q download "${PKGS[@]}" >&2)
for d in "$BASE"/debs/*.deb; do dpkg-deb -x "$d" "$BASE/root"; done
LIBS="$BASE/root/usr/lib/x86_64-linux-gnu:$BASE/root/lib/x86_64-linux-gnu"
LD="$BASE/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[[ -e "$LD" ]] || LD="$BASE/root/lib64/ld-linux-x86-64.so.2"
cat > "$WRAP" <<W
#!/bin/sh
# trixie's criu with trixie's glibc, never the system's (see hack/fetch-criu.sh)
exec "$LD" --library-path "$LIBS" "$BASE/root/usr/sbin/criu" "\$@"
W
chmod +x "$WRAP"
if "$LD" --library-path "$LIBS" --list "$BASE/root/usr/sbin/criu" | grep -q "not found"; then
  "$LD" --library-path "$LIBS" --list "$BASE/root/usr/sbin/criu" >&2
  echo "fetch-criu: a library criu needs is missing" >&2
  exit 1
fi
"$WRAP" --version >&2
touch "$BASE/.ok"
echo "$WRAP"
