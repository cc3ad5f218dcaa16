#!/usr/bin/env bash
# Installs the Debian packages the tests and the local cluster need. Idempotent and quick when warm.
set -euo pipefail
pkgs=(etcd-server prometheus clang llvm libbpf-dev bpftool iproute2 iperf3 openssl ethtool
  containerd runc containernetworking-plugins  # the real nodes (hack/realnodes.py)
  mmdebstrap gcc libc6-dev)  # images built here (hack/images.py)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "[install-deps] apt-get install ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  # Debian's prometheus/etcd packages try to start services; we start our own on loopback.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # Keep the packaged daemons from holding the ports our harness uses.
  $SUDO pkill -x etcd 2>/dev/null || true
  $SUDO pkill -x prometheus 2>/dev/null || true
fi
