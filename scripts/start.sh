#!/usr/bin/env bash
# npm start: installs what is missing (scripts/setup.sh), builds what changed (tsc -b, only the
# programs: tsconfig.product.json), then runs the demo (scripts/start.ts). The time of the first
# two steps goes to start.ts, which prints where the time went when "Card ready" came late.
set -euo pipefail
cd "$(dirname "$0")/.."
began=$EPOCHREALTIME
bash scripts/setup.sh
set_up=$EPOCHREALTIME
# tsc -b alone takes a second or more to find nothing to do: skip it when no input is newer than
# the last build (of the programs, or of everything: npm run build, npm test) and the programs are there.
stamp=dist/tsconfig.product.tsbuildinfo
[[ dist/tsconfig.tsbuildinfo -nt "$stamp" ]] && stamp=dist/tsconfig.tsbuildinfo
if [[ ! -f "$stamp" || ! -f dist/scripts/start.js || ! -f dist/daemon/main.js || ! -f dist/cli/main.js ||
  -n "$(find tpm attestation ca vault applet daemon cli common scripts/start.ts tsconfig.json tsconfig.product.json \
    package-lock.json -newer "$stamp" -print -quit)" ]]; then
  node_modules/.bin/tsc -b tsconfig.product.json
fi
built=$EPOCHREALTIME
milliseconds() { local from=${1/./} to=${2/./}; echo $(((10#$to - 10#$from) / 1000)); }
export TPMVSC_START_STEPS="setup=$(milliseconds "$began" "$set_up"),build=$(milliseconds "$set_up" "$built")"
exec node dist/scripts/start.js
