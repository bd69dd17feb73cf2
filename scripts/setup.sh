#!/usr/bin/env bash
# Installs what tpmvsc needs on Debian 12 when it is missing: the Debian packages its
# daemon and tests use, then the npm dependencies. Safe to run again: it does nothing
# when everything is present. Needs root only when something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  # the card stack
  pcscd vsmartcard-vpcd libpcsclite-dev
  # the TPM: a software TPM for tests and for machines without one, and tpm2-tools for interop checks
  swtpm swtpm-tools tpm2-tools gnutls-bin
  # the tss group and the udev rule that gives it /dev/tpmrm0 (the daemon's unit runs with that group)
  tpm-udev
  # real clients the end-to-end tests drive
  opensc pcsc-tools yubico-piv-tool ykcs11 python3-ykman yubikey-manager python3-pyscard
  libengine-pkcs11-openssl libnss3-tools openssh-server openssh-client p11-kit
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools
  # a real browser for test/e2e/browser_client_auth.test.ts (TLS client authentication)
  chromium
  # provisioning tpm2-pkcs11 for bench/pkcs11_bench.ts (tpm2-abrmd on a private session bus)
  tpm2-abrmd libtss2-tcti-tabrmd0 dbus
  # isolation and service checks; systemd-nspawn boots the installed service in a container
  # (test/e2e/systemd_service.test.ts)
  util-linux iproute2 systemd systemd-container openssl
  # the vpcd guard: tpmvscd's nftables table keeps other local users off the reader ports
  nftables
)

# One dpkg-query for all of them (one per package cost seconds on a busy machine).
declare -A installed=()
while read -r pkg status; do
  [[ "$status" == installed ]] && installed[$pkg]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${DEBIAN_PACKAGES[@]}" 2>/dev/null || true)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  [[ -n "${installed[$pkg]:-}" ]] || missing+=("$pkg")
done

# Native modules (pcsclite) build against the headers of this node, never downloaded ones.
source scripts/native_build_env.sh
tpmvsc_find_node_headers
if [[ -z "$TPMVSC_NODE_HEADERS" && "$(dpkg-query -S "$(readlink -f "$(type -P node)")" 2>/dev/null)" == nodejs:* ]]; then
  missing+=(libnode-dev) # Debian's nodejs keeps its headers there
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "tpmvsc setup: missing Debian packages: ${missing[*]}" >&2
    echo "tpmvsc setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "tpmvsc setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  tpmvsc_find_node_headers
fi
tpmvsc_use_local_node_headers

# npm dependencies: install when node_modules is missing or older than the lock file; build the
# native module again when its binary is missing (e.g. installed with --ignore-scripts).
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
elif [[ ! -f node_modules/pcsclite/build/Release/pcsclite.node ]]; then
  npm rebuild pcsclite
fi
