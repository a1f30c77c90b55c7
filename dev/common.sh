# shellcheck shell=bash
# Shared by the dev/ scripts: Debian's own tools first (not a pyenv or venv
# python), the repository root, and the build output folder.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${MXRC_BUILD_DIR:-$ROOT/build}
export MXRC_DEB_DIR=${MXRC_DEB_DIR:-$BUILD/debs}
step() { printf '\n==> %s\n' "$*"; }
