#!/usr/bin/env bash
# System packages mcutrain needs (Debian). As root: installs what is missing with apt-get.
# Otherwise: prints the exact command to run and exits 0, so Python-only work can go on.
# Add packages here as the pipeline grows (the Cortex-M toolchain and QEMU come with code generation).
set -euo pipefail

PACKAGES=(dataset-fashion-mnist gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "mcutrain setup: missing system packages: ${missing[*]}" >&2
    echo "mcutrain setup: run as root:  apt-get update && $cmd" >&2
    exit 0
fi
echo "mcutrain setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null || echo "mcutrain setup: apt-get update failed; trying the cached lists" >&2
$cmd >/dev/null
