#!/usr/bin/env bash
# Installs tpmvsc as a system service (Debian 12). Run from the repository as root:
#   npm run build && sudo scripts/install.sh            # install, register readers, start
#   sudo scripts/install.sh --no-start                 # install only
#   DESTDIR=/tmp/pkgroot scripts/install.sh --no-start # stage into a directory (packaging)
# Layout:
#   /usr/lib/tpmvsc/{dist,node_modules,package.json}   the built JavaScript and its runtime deps
#   /usr/bin/tpmvscd, /usr/bin/tpmvscmgr, /usr/bin/tpmvsc-ca  wrappers: exec node /usr/lib/tpmvsc/dist/...
#   /usr/lib/systemd/system/tpmvscd.service            the daemon unit
#   /usr/lib/sysusers.d/tpmvsc.conf                    user + group tpmvsc
#   /usr/lib/tmpfiles.d/tpmvsc.conf                    /var/lib/tpmvsc, /run/tpmvsc
#   /etc/systemd/system/pcscd.service.d/tpmvsc.conf    pcscd: loopback-only IP traffic
#   /etc/reader.conf.d/ + /usr/lib/tpmvsc/drivers/     pcscd readers (tpmvscd register-readers)
#   /usr/share/doc/tpmvsc/INSTALL.md
set -euo pipefail
cd "$(dirname "$0")/.."

start=1
for argument in "$@"; do
  case "$argument" in
    --no-start) start=0 ;;
    *) echo "install.sh: unknown option $argument (use --no-start)" >&2; exit 2 ;;
  esac
done

DESTDIR="${DESTDIR:-}"
LIB="$DESTDIR/usr/lib/tpmvsc"
NODE="$(command -v node || true)"
if [[ -z "$NODE" ]]; then echo "install.sh: node (>= 20) is not installed" >&2; exit 1; fi
if [[ -z "$DESTDIR" && $(id -u) -ne 0 ]]; then echo "install.sh: run as root (or set DESTDIR)" >&2; exit 1; fi
if [[ ! -f dist/cli/main.js || ! -f dist/daemon/main.js ]]; then
  echo "install.sh: build first: npm run build" >&2; exit 1
fi

install -d -m 0755 "$LIB" "$DESTDIR/usr/bin" "$DESTDIR/usr/lib/systemd/system" "$DESTDIR/usr/lib/sysusers.d" \
  "$DESTDIR/usr/lib/tmpfiles.d" "$DESTDIR/etc/systemd/system/pcscd.service.d" "$DESTDIR/usr/share/doc/tpmvsc"

# The product: compiled JavaScript plus production dependencies only.
rm -rf "$LIB/dist"
cp -r dist "$LIB/dist"
rm -rf "$LIB/dist/test" "$LIB/dist/bench"
install -m 0644 package.json package-lock.json "$LIB/"
source scripts/native_build_env.sh # pcsclite builds against this node's installed headers, offline
tpmvsc_use_local_node_headers
(cd "$LIB" && npm ci --omit=dev --no-audit --no-fund >/dev/null)

for tool in tpmvscd:daemon tpmvscmgr:cli tpmvsc-ca:ca; do
  name="${tool%%:*}"; folder="${tool##*:}"
  cat >"$DESTDIR/usr/bin/$name" <<WRAPPER
#!/bin/sh
exec $NODE /usr/lib/tpmvsc/dist/$folder/main.js "\$@"
WRAPPER
  chmod 0755 "$DESTDIR/usr/bin/$name"
done

install -m 0644 systemd/tpmvscd.service "$DESTDIR/usr/lib/systemd/system/tpmvscd.service"
install -m 0644 systemd/sysusers.d/tpmvsc.conf "$DESTDIR/usr/lib/sysusers.d/tpmvsc.conf"
install -m 0644 systemd/tmpfiles.d/tpmvsc.conf "$DESTDIR/usr/lib/tmpfiles.d/tpmvsc.conf"
install -m 0644 systemd/pcscd.service.d/tpmvsc.conf "$DESTDIR/etc/systemd/system/pcscd.service.d/tpmvsc.conf"
install -m 0644 docs/INSTALL.md "$DESTDIR/usr/share/doc/tpmvsc/INSTALL.md"

if [[ -n "$DESTDIR" ]]; then
  echo "install.sh: staged into $DESTDIR"
  exit 0
fi

systemd-sysusers /usr/lib/sysusers.d/tpmvsc.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/tpmvsc.conf
# pcscd's readers for the pool (settings from the environment: TPMVSC_READERS, TPMVSC_VPCD...).
/usr/bin/tpmvscd register-readers --conf-dir /etc/reader.conf.d --driver-dir /usr/lib/tpmvsc/drivers

if [[ $start -eq 1 ]] && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl restart pcscd.service
  systemctl enable --now tpmvscd.service
  echo "install.sh: tpmvscd is running; add administrators with: usermod -aG tpmvsc <user>"
else
  echo "install.sh: installed; start with: systemctl daemon-reload && systemctl restart pcscd && systemctl enable --now tpmvscd"
fi
