#!/usr/bin/env bash
# Installs tpmvsc as a system service (Debian 12). Run from the repository as root:
#   npm run build && sudo scripts/install.sh            # install, register readers, start
#   sudo scripts/install.sh --no-start                 # install only
#   DESTDIR=/tmp/pkgroot scripts/install.sh --no-start # stage into a directory (packaging)
#   sudo scripts/install.sh --restrict-pcscd[=GROUP]   # also: only root and GROUP (default scard)
#                                                      # may use pcscd, i.e. any smart card (docs/INSTALL.md)
# Layout (only what runs: no scripts, benchmarks, tests or source maps):
#   /usr/lib/tpmvsc/{dist,node_modules,package.json}   the built JavaScript and its production deps
#   /usr/bin/tpmvscd, /usr/bin/tpmvscmgr, /usr/bin/tpmvsc-ca  wrappers: exec node /usr/lib/tpmvsc/dist/...
#   /usr/lib/systemd/system/tpmvscd.service            the daemon unit
#   /usr/lib/sysusers.d/tpmvsc.conf                    user + group tpmvsc, group tss
#   /usr/lib/tmpfiles.d/tpmvsc.conf                    /var/lib/tpmvsc, /run/tpmvsc
#   /etc/systemd/system/pcscd.service.d/tpmvsc.conf    pcscd: no --auto-exit, loopback only, sandboxed
#   /etc/reader.conf.d/ + /usr/lib/tpmvsc/drivers/     pcscd readers (tpmvscd register-readers)
#   /usr/share/doc/tpmvsc/INSTALL.md
#   with --restrict-pcscd: /etc/systemd/system/pcscd.socket.d/tpmvsc-restrict.conf (socket 0660
#   root:GROUP) and /usr/lib/sysusers.d/tpmvsc-pcscd.conf (the group)
# Every file is first built in a staging directory beside the target and moved into place
# only when all of them are ready: a failing step leaves neither a half tree nor a changed
# install behind.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

start=1
pcscd_group=""
for argument in "$@"; do
  case "$argument" in
    --no-start) start=0 ;;
    --restrict-pcscd) pcscd_group=scard ;;
    --restrict-pcscd=*) pcscd_group="${argument#*=}" ;;
    *) echo "install.sh: unknown option $argument (use --no-start or --restrict-pcscd[=GROUP])" >&2; exit 2 ;;
  esac
done
if [[ -n "$pcscd_group" && ! "$pcscd_group" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
  echo "install.sh: --restrict-pcscd=GROUP needs a group name of lower-case letters, digits, _ and - (e.g. scard)" >&2; exit 2
fi

# dist/ folders that run; dist/scripts, dist/bench and dist/test are development only.
PRODUCT_FOLDERS=(applet attestation ca cli common daemon tpm vault)
DESTDIR="${DESTDIR:-}"
NODE="$(command -v node || true)"
if [[ -z "$NODE" ]]; then echo "install.sh: node (>= 20) is not installed" >&2; exit 1; fi
if [[ -z "$DESTDIR" && $(id -u) -ne 0 ]]; then echo "install.sh: run as root (or set DESTDIR)" >&2; exit 1; fi
for folder in "${PRODUCT_FOLDERS[@]}"; do
  if [[ ! -d "dist/$folder" ]]; then echo "install.sh: dist/$folder is missing: build first: npm run build" >&2; exit 1; fi
done

# The staging directory sits on the target's file system, so moving it in is a rename.
# A DESTDIR that does not exist yet is created, and removed again if the install fails.
created=""
if [[ -n "$DESTDIR" ]]; then
  DESTDIR="$(realpath -m "$DESTDIR")"
  missing="$DESTDIR"
  while [[ ! -e "$missing" ]]; do created="$missing"; missing="$(dirname "$missing")"; done
  mkdir -p "$DESTDIR"
  STAGE="$(mktemp -d "$DESTDIR/.tpmvsc-install.XXXXXX")"
else
  STAGE="$(mktemp -d /usr/lib/.tpmvsc-install.XXXXXX)"
fi
committed=0
discard_stage() {
  local status=$1
  rm -rf "$STAGE"
  if [[ $committed -eq 0 && $status -ne 0 ]]; then
    if [[ -n "$created" ]]; then find "$created" -depth -type d -empty -delete 2>/dev/null || true; fi
    echo "install.sh: failed (exit code $status) at: ${failed_command:-?}; nothing was installed or changed" >&2
  fi
}
failed_command=""
trap 'failed_command=${failed_command:-$BASH_COMMAND}' ERR
trap 'discard_stage $?' EXIT

ROOT="$STAGE/root"
LIB="$ROOT/usr/lib/tpmvsc"
install -d -m 0755 "$LIB/dist" "$ROOT/usr/bin" "$ROOT/usr/lib/systemd/system" "$ROOT/usr/lib/sysusers.d" \
  "$ROOT/usr/lib/tmpfiles.d" "$ROOT/etc/systemd/system/pcscd.service.d" "$ROOT/usr/share/doc/tpmvsc"

# The product: compiled JavaScript without source maps, plus production dependencies only.
for folder in "${PRODUCT_FOLDERS[@]}"; do cp -r "dist/$folder" "$LIB/dist/$folder"; done
find "$LIB/dist" \( -name '*.map' -o -name '*.d.ts' \) -delete
install -m 0644 package.json "$LIB/"
# The production dependencies are the ones scripts/setup.sh's `npm ci` put in node_modules
# (native modules already built): npm lists them (and fails on a missing or wrong version),
# and they are copied with the same layout. No registry, and no package's install script
# runs as root here.
packages="$(npm ls --omit=dev --all --parseable)" || {
  failed_command="npm ls --omit=dev (node_modules does not match package.json: run bash scripts/setup.sh)"; exit 1
}
copied=()
while read -r package; do
  relative="${package#"$PWD"/}"
  [[ "$relative" == node_modules/* ]] || continue
  for done_package in "${copied[@]}"; do [[ "$relative" == "$done_package"/* ]] && continue 2; done
  mkdir -p "$LIB/$(dirname "$relative")"
  cp -r "$relative" "$LIB/$relative"
  copied+=("$relative")
done < <(sort <<<"$packages")

for tool in tpmvscd:daemon tpmvscmgr:cli tpmvsc-ca:ca; do
  name="${tool%%:*}"; folder="${tool##*:}"
  cat >"$ROOT/usr/bin/$name" <<WRAPPER
#!/bin/sh
exec $NODE /usr/lib/tpmvsc/dist/$folder/main.js "\$@"
WRAPPER
  chmod 0755 "$ROOT/usr/bin/$name"
done

install -m 0644 systemd/tpmvscd.service "$ROOT/usr/lib/systemd/system/tpmvscd.service"
install -m 0644 systemd/sysusers.d/tpmvsc.conf "$ROOT/usr/lib/sysusers.d/tpmvsc.conf"
install -m 0644 systemd/tmpfiles.d/tpmvsc.conf "$ROOT/usr/lib/tmpfiles.d/tpmvsc.conf"
install -m 0644 systemd/pcscd.service.d/tpmvsc.conf "$ROOT/etc/systemd/system/pcscd.service.d/tpmvsc.conf"
install -m 0644 docs/INSTALL.md "$ROOT/usr/share/doc/tpmvsc/INSTALL.md"
# --restrict-pcscd[=GROUP]: pcscd's socket 0660 root:GROUP, so only root and GROUP reach any card,
# real or virtual (the trade-off: docs/INSTALL.md, "Who can reach a card"). Without the option an
# earlier restriction is left as it is.
if [[ -n "$pcscd_group" ]]; then
  install -d -m 0755 "$ROOT/etc/systemd/system/pcscd.socket.d"
  sed "s/^SocketGroup=scard\$/SocketGroup=$pcscd_group/" systemd/pcscd.socket.d/tpmvsc-restrict.conf \
    >"$ROOT/etc/systemd/system/pcscd.socket.d/tpmvsc-restrict.conf"
  sed "s/^g      scard -\$/g      $pcscd_group -/" systemd/sysusers.d/tpmvsc-pcscd.conf >"$ROOT/usr/lib/sysusers.d/tpmvsc-pcscd.conf"
  chmod 0644 "$ROOT/etc/systemd/system/pcscd.socket.d/tpmvsc-restrict.conf" "$ROOT/usr/lib/sysusers.d/tpmvsc-pcscd.conf"
fi

# Everything is staged: move it in. /usr/lib/tpmvsc is swapped as a whole (the old tree is
# renamed aside first and put back if the new one cannot take its place); every other file is
# renamed over its old version.
target="$DESTDIR/usr/lib/tpmvsc"
mkdir -p "$(dirname "$target")"
if [[ -e "$target" ]]; then mv "$target" "$STAGE/previous"; fi
if ! mv "$LIB" "$target"; then
  if [[ -e "$STAGE/previous" ]]; then mv "$STAGE/previous" "$target"; fi
  echo "install.sh: could not move the new tree to $target: the previous install is unchanged" >&2
  exit 1
fi
committed=1
(cd "$ROOT" && find . -type f -printf '%P\n') | while read -r file; do
  mkdir -p "$(dirname "$DESTDIR/$file")"
  mv -f "$ROOT/$file" "$DESTDIR/$file"
done

if [[ -n "$DESTDIR" ]]; then
  echo "install.sh: staged into $DESTDIR"
  exit 0
fi

systemd-sysusers /usr/lib/sysusers.d/tpmvsc.conf
if [[ -n "$pcscd_group" ]]; then systemd-sysusers /usr/lib/sysusers.d/tpmvsc-pcscd.conf; fi
systemd-tmpfiles --create /usr/lib/tmpfiles.d/tpmvsc.conf
# pcscd's readers for the pool (settings from the environment: TPMVSC_READERS, TPMVSC_VPCD...).
/usr/bin/tpmvscd register-readers --conf-dir /etc/reader.conf.d --driver-dir /usr/lib/tpmvsc/drivers

if [[ -n "$pcscd_group" ]]; then
  echo "install.sh: only root and group $pcscd_group may use pcscd; add card users with: usermod -aG $pcscd_group <user>"
fi
if [[ $start -eq 0 ]] || [[ ! -d /run/systemd/system ]]; then
  echo "install.sh: installed; start with: systemctl daemon-reload && systemctl restart pcscd && systemctl enable --now tpmvscd"
  exit 0
fi

# The last line the journal has about tpmvscd since $1 ("@seconds.micro") that says more than
# systemd's generic start/stop/exit lines. (A time, not a cursor: journalctl 252 combines
# --after-cursor and -u wrongly when the cursor's entry is about another unit.)
why_not_running() {
  local lines
  lines="$(journalctl -u tpmvscd.service --since "$1" -o cat -q --no-pager 2>/dev/null || true)"
  local telling
  telling="$(grep -v -E '^(Started|Starting|Stopped|Stopping) |Main process exited|Failed with result|Scheduled restart job|Consumed .* CPU time|Deactivated successfully|^$' <<<"$lines" | tail -n 1)"
  echo "${telling:-$(tail -n 1 <<<"$lines")}"
}

since="@$(date +%s.%6N)"
systemctl daemon-reload
if [[ -n "$pcscd_group" ]]; then
  # systemd makes the socket: make it again with the new mode.
  systemctl stop pcscd.service pcscd.socket
  systemctl start pcscd.socket
fi
systemctl restart pcscd.service
systemctl enable --quiet --no-reload tpmvscd.service # reloaded just above: a second reload costs seconds
systemctl restart tpmvscd.service
# Running means the daemon said "ready" (TPM opened, cards in their readers, control socket
# up); any other state, a restart included, is a failed start.
for ((waited = 0; ; waited++)); do
  if journalctl -u tpmvscd.service --since "$since" -o cat -q --no-pager 2>/dev/null | grep -q '^tpmvscd: ready:'; then
    echo "install.sh: tpmvscd is running; add administrators with: usermod -aG tpmvsc <user>"
    exit 0
  fi
  state="$(systemctl show -p ActiveState --value tpmvscd.service)/$(systemctl show -p SubState --value tpmvscd.service)"
  if [[ "$state" != active/running ]] || ((waited >= 300)); then
    [[ "$state" == active/running ]] && state="not ready after 60 s"
    # The journal may still be taking the last words of the daemon or of systemd.
    for ((tries = 0; tries < 25; tries++)); do
      reason="$(why_not_running "$since")"
      [[ -n "$reason" ]] && break
      sleep 0.2
    done
    echo "install.sh: tpmvscd is not running ($state): ${reason:-the journal says nothing} -- the files are installed: fix that (see /usr/share/doc/tpmvsc/INSTALL.md), then: systemctl restart tpmvscd" >&2
    exit 1
  fi
  sleep 0.2
done
