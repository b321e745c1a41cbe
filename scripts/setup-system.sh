#!/usr/bin/env bash
# Debian packages the test suite needs: QEMU and cross compilers (firmware), Chromium (report
# screenshots), Node.js (the non-Python streaming consumer), Mosquitto (the MQTT fleet tests). Installs only what is missing.
# Needs root (or sudo); without either it prints the command and goes on, and the tests that
# need a missing tool skip with the same command in their reason.
set -euo pipefail
PACKAGES=(
    qemu-system-arm            # Cortex-M4 / M7 / STM32F405 firmware under emulation
    qemu-system-misc           # RISC-V 32 firmware under emulation
    gcc-arm-none-eabi          # Cortex-M cross compiler
    libnewlib-arm-none-eabi    # its C library
    gcc-riscv64-unknown-elf    # RISC-V cross compiler (rv32 via -march)
    chromium                   # headless screenshots of HTML reports
    nodejs                     # examples/ websocket consumer
    mosquitto                  # MQTT broker the fleet tests start on a free port (never a service)
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
    echo "missing Debian packages (tests that need them will skip): ${missing[*]}" >&2
    echo "install with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 0
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The tests run their own broker with a generated config; the package must not leave one
# running as a system service.
if [[ " ${missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null \
        && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
fi
