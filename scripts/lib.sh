# Shared helpers for scripts/install-*-deps (sourced, not run).
#
# need <debian-package> <check command...>: records the package when the
# check fails. install_needed <what>: installs the recorded packages with
# apt-get when root (apt-get update once), else prints them and fails.

CONC_MISSING=()

need() {
    local pkg=$1
    shift
    if ! "$@" >/dev/null 2>&1; then
        CONC_MISSING+=("$pkg")
    fi
}

have_cmd() { command -v "$1"; }
have_pc() { command -v pkg-config && pkg-config --exists "$1"; }

install_needed() {
    local what=$1
    if [ ${#CONC_MISSING[@]} -eq 0 ]; then
        return 0
    fi
    echo "conc: $what need: ${CONC_MISSING[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "conc: not root, so not installing them. Run as root, or:" >&2
        echo "      sudo apt-get install -y ${CONC_MISSING[*]}" >&2
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "conc: no apt-get here; install the equivalents of: ${CONC_MISSING[*]}" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    if apt-get install -y -q --no-install-recommends "${CONC_MISSING[@]}"; then
        return 0
    fi
    # One bad name fails the whole batch: with CONC_TOLERANT=1, install the
    # others one by one and report the ones that failed.
    [ "${CONC_TOLERANT:-0}" = 1 ] || return 1
    local p rc=0
    for p in "${CONC_MISSING[@]}"; do
        apt-get install -y -q --no-install-recommends "$p" || {
            echo "conc: could not install $p" >&2
            rc=1
        }
    done
    return $rc
}
