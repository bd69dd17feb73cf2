# Sourced by scripts/setup.sh and scripts/install.sh (bash). Native modules (pcsclite) are built
# by node-gyp, which downloads Node.js's headers from the internet unless told where they are
# (with a fresh HOME there is no ~/.npmrc saying nodedir=...). The headers of the running node
# are in <node's prefix>/include/node: Debian's libnode-dev and NodeSource's nodejs put them in
# /usr/include/node, nvm in ~/.nvm/versions/node/vX/include/node. tpmvsc_use_local_node_headers
# exports npm_config_nodedir=<prefix> when they are there and match node's version, so npm ci,
# npm rebuild and node-gyp build offline.

# Sets TPMVSC_NODE_HEADERS to the prefix whose include/node holds the headers of this node
# (empty when there is none). Shell built-ins where possible: setup.sh runs at every npm start.
tpmvsc_find_node_headers() {
  TPMVSC_NODE_HEADERS=''
  local node prefix line major='' minor='' patch=''
  node="$(readlink -f "$(type -P node)")" || return 0
  prefix="${node%/bin/*}"
  [[ -f "$prefix/include/node/node_version.h" && -f "$prefix/include/node/common.gypi" ]] || return 0
  while read -r line; do
    case "$line" in
      '#define NODE_MAJOR_VERSION '*) major="${line##* }" ;;
      '#define NODE_MINOR_VERSION '*) minor="${line##* }" ;;
      '#define NODE_PATCH_VERSION '*) patch="${line##* }" ;;
    esac
  done <"$prefix/include/node/node_version.h"
  [[ "v$major.$minor.$patch" == "$(node --version)" ]] && TPMVSC_NODE_HEADERS="$prefix"
  return 0
}

# Exports npm_config_nodedir unless the caller set it; says so when node-gyp would go online.
tpmvsc_use_local_node_headers() {
  [[ -n "${npm_config_nodedir:-}" ]] && return 0
  [[ -v TPMVSC_NODE_HEADERS ]] || tpmvsc_find_node_headers
  if [[ -n "$TPMVSC_NODE_HEADERS" ]]; then
    export npm_config_nodedir="$TPMVSC_NODE_HEADERS"
  else
    echo "tpmvsc: no headers of node $(node --version) on this machine: node-gyp will download them" \
      "(install Debian's libnode-dev for Debian's nodejs, or set npm_config_nodedir)" >&2
  fi
}
