#!/usr/bin/env bash
# Fetch one commit of a git repository into a new directory, and nothing else.
#
#   git-fetch-commit.sh URL DEST COMMIT
#
# COMMIT must be a full 40-hex SHA: branch or tag names move, a SHA does not. The fetch is
# shallow (depth 1), so the image carries one commit, not the history. The checkout is
# verified against COMMIT afterwards, so a server that answers with something else fails
# the build instead of shipping it.
set -euo pipefail

die() {
  echo "git-fetch-commit: $*" >&2
  exit 1
}

main() {
  [[ $# -eq 3 ]] || die "usage: git-fetch-commit.sh URL DEST COMMIT"
  local url="$1" dest="$2" commit="$3"

  [[ "$commit" =~ ^[0-9a-f]{40}$ ]] ||
    die "COMMIT for ${url} must be a full 40-character lowercase hex SHA, got '${commit}'"
  if [[ -e "$dest" ]] && [[ -n "$(ls -A "$dest")" ]]; then
    die "${dest} already exists and is not empty"
  fi

  mkdir -p "$dest"
  git -C "$dest" init --quiet
  git -C "$dest" remote add origin "$url"
  git -C "$dest" -c protocol.version=2 fetch --quiet --depth 1 origin "$commit" ||
    die "could not fetch ${commit} from ${url}"
  git -C "$dest" -c advice.detachedHead=false checkout --quiet FETCH_HEAD

  local head
  head="$(git -C "$dest" rev-parse HEAD)"
  [[ "$head" == "$commit" ]] || die "${url}: expected ${commit}, checked out ${head}"
  echo "${url} @ ${commit} -> ${dest}"
}

main "$@"
