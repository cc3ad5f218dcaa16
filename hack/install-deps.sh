#!/usr/bin/env bash
# Installs the Debian packages the tests and the local cluster need. Idempotent and quick when warm.
set -euo pipefail
pkgs=(etcd-server prometheus clang llvm libbpf-dev bpftool iproute2 iperf3 openssl ethtool
  containerd runc containernetworking-plugins  # the real nodes (hack/realnodes.py)
  mmdebstrap gcc libc6-dev  # images built here (hack/images.py)
  prometheus-alertmanager)  # the stock alerting path in bench-remediation (our own process, loopback)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "[install-deps] apt-get install ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  # Debian's prometheus/etcd packages try to start services; we start our own on loopback. A policy-rc.d
  # that says 101 ("action forbidden") keeps invoke-rc.d from starting them at all, so nothing needs
  # stopping afterwards, and a daemon the user already runs (their own etcd or Prometheus) is never
  # touched: we never kill a process by name. A policy-rc.d the machine already has is put back after.
  policy=/usr/sbin/policy-rc.d; saved=""
  if [[ -e $policy ]]; then saved=$(mktemp); $SUDO cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null; $SUDO chmod +x "$policy"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # With systemd, a unit a package we just installed enabled would start at the next boot: disable (not
  # stop) it. Only for packages this run installed: a service the user already had stays as it was.
  if [[ -d /run/systemd/system ]]; then
    for p in "${missing[@]}"; do
      case $p in etcd-server) unit=etcd ;; prometheus) unit=prometheus ;;
        prometheus-alertmanager) unit=prometheus-alertmanager ;; *) continue ;; esac
      $SUDO systemctl disable "$unit.service" >/dev/null 2>&1 || true
    done
  fi
  if [[ -n $saved ]]; then $SUDO mv "$saved" "$policy"; else $SUDO rm -f "$policy"; fi
fi
