# shellcheck shell=bash
# What scripts/build-images, build-systemd-image and build-daemon-image share: logging,
# the Debian mirrors, the build tools, a work area, one build at a time, mmdebstrap into a
# root file system tarball, and the recipe label that says whether an image is up to date.
#
# Source it after setting PROG; VERBOSE=1 makes run_logged show everything.

VERBOSE=${VERBOSE:-0}

now_ms() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo $((10#$t / 1000))
    else
        echo $((SECONDS * 1000))
    fi
}
START_MS=$(now_ms)
log() {
    local ms=$(($(now_ms) - START_MS))
    printf '[%4d.%ds] %s\n' "$((ms / 1000))" "$((ms % 1000 / 100))" "$*"
}
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
# The comment block at the top of the calling script, up to `set -euo`
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
took() { local ms=$(($(now_ms) - $1)); printf '%d.%ds' "$((ms / 1000))" "$((ms % 1000 / 100))"; }

# Debian's mirrors: DLAAS_DEBIAN_MIRROR, and DLAAS_DEBIAN_SECURITY_MIRROR ("none" leaves
# security updates out; its default is Debian's own only when the mirror is Debian's own)
MIRROR=${DLAAS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [[ -n ${DLAAS_DEBIAN_SECURITY_MIRROR+set} ]]; then
    SECURITY_MIRROR=$DLAAS_DEBIAN_SECURITY_MIRROR
elif [[ -z ${DLAAS_DEBIAN_MIRROR:-} ]]; then
    SECURITY_MIRROR=http://deb.debian.org/debian-security
else
    SECURITY_MIRROR=none
fi

# Files dpkg does not unpack in any of our images (documentation, translations)
# shellcheck disable=SC2034  # used by the scripts that source this file
DOC_DPKG_OPTS=(
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*'
    'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/lintian/*'
    'path-exclude=/usr/share/bug/*'
)

require_docker() {
    command -v docker >/dev/null 2>&1 ||
        die "docker is not installed (Debian: apt-get install docker.io)"
    local err
    if ! err=$(docker info 2>&1 >/dev/null); then
        die "Docker is not reachable: ${err##*$'\n'}
  Is dockerd running, and may this user use it (root or the 'docker' group)?"
    fi
}

install_packages() {
    # install_packages PKG...: with apt-get, as root or through sudo
    command -v apt-get >/dev/null 2>&1 ||
        die "$* missing, and this is not a Debian-like system: install mmdebstrap (>= 1.0) and debian-archive-keyring by hand"
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "$* missing; install as root: apt-get install --no-install-recommends $*"
        sudo=(sudo)
    fi
    log "installing $* with apt-get"
    "${sudo[@]}" apt-get update -qq
    # env inside sudo: sudo resets the environment, so a prefix assignment would not reach apt-get
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

HOOK_ARGS=()
require_build_tools() {
    # require_build_tools: mmdebstrap (>= 1.0, with the hooks named in HOOKS), its keyring,
    # dpkg-deb, and uidmap for a user (mmdebstrap's unshare mode); sets HOOK_ARGS
    local missing=() hook
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
    [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
    if [[ $EUID -ne 0 ]] && ! command -v newuidmap >/dev/null 2>&1; then missing+=(uidmap); fi
    [[ ${#missing[@]} -eq 0 ]] || install_packages "${missing[@]}"
    command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is still missing"
    command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is missing (package dpkg)"
    HOOK_ARGS=()
    for hook in ${HOOKS:-}; do
        [[ -d /usr/share/mmdebstrap/hooks/$hook ]] ||
            die "/usr/share/mmdebstrap/hooks/$hook is missing: mmdebstrap $(mmdebstrap --version 2>/dev/null | awk '{print $2}') is too old, need >= 1.0"
        HOOK_ARGS+=(--hook-dir="/usr/share/mmdebstrap/hooks/$hook")
    done
}

WORK=""
_remove_work() {
    [[ -n $WORK && -d $WORK ]] || return 0
    # mmdebstrap's hooks bind-mount into its chroot (under $WORK) and may leave a mount
    # behind when they fail: never rm -rf through a mount
    local mnt
    if command -v findmnt >/dev/null 2>&1; then
        findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r |
            while IFS= read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; done ||
            true
    fi
    if findmnt -rn -o TARGET 2>/dev/null | grep -qF "$WORK/"; then
        echo "$PROG: warning: left $WORK behind: something is still mounted there" >&2
    else
        rm -rf --one-file-system -- "$WORK"
    fi
}
make_work() {
    # make_work: a temporary folder $WORK (readable by mmdebstrap's unshare mode), removed on exit
    [[ -n $WORK ]] && return 0
    mkdir -p "${TMPDIR:-/tmp}"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlaas-$PROG.XXXXXX")
    chmod 0755 "$WORK"
}
trap _remove_work EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

one_build_at_a_time() {
    # One build of this kind at a time on this machine (tests may run it concurrently);
    # skipped when the lock file is another user's
    local lock=${TMPDIR:-/tmp}/dlaas-$PROG.lock
    command -v flock >/dev/null 2>&1 && { exec 9>>"$lock"; } 2>/dev/null || return 0
    if ! flock -n 9; then
        log "waiting for another $PROG run to finish"
        flock 9
    fi
}

run_logged() {
    # run_logged LOGFILE CMD...: quiet unless VERBOSE=1; the log's tail when it fails
    local logfile=$1; shift
    if [[ $VERBOSE -eq 1 ]]; then
        "$@" 2>&1 | tee "$logfile"
        return "${PIPESTATUS[0]}"
    fi
    if ! "$@" >"$logfile" 2>&1; then
        echo "---- last lines of $(basename "$logfile") ----" >&2
        tail -n 40 "$logfile" >&2
        return 1
    fi
}

recipe_of_image() { docker image inspect --format '{{ index .Config.Labels "dlaas.recipe" }}' "$1" 2>/dev/null || true; }

root_tarball() {
    # root_tarball TAR SUITE VARIANT PACKAGES DPKG_OPT_ARRAY_NAME [mmdebstrap args...]:
    # a root file system of SUITE with PACKAGES, from the mirrors, into TAR
    local tar=$1 suite=$2 variant=$3 packages=$4 opts_name=$5; shift 5
    local -n opts=$opts_name
    local sources=("deb $MIRROR $suite main" "deb $MIRROR $suite-updates main")
    if [[ -n $SECURITY_MIRROR && $SECURITY_MIRROR != none ]]; then
        sources+=("deb $SECURITY_MIRROR $suite-security main")
    fi
    local args=(
        --variant="$variant"
        --format=tar
        --aptopt='APT::Install-Recommends "false"'
        --aptopt='Acquire::Languages "none"'
        "${HOOK_ARGS[@]}"
        --include="${packages// /,}"
        "$@"
    )
    local opt
    for opt in "${opts[@]}"; do args+=(--dpkgopt="$opt"); done
    make_work
    TMPDIR=$WORK run_logged "$tar.mmdebstrap.log" mmdebstrap "${args[@]}" "$suite" "$tar" "${sources[@]}"
}

replace_image() {
    # replace_image ID IMAGE: tag ID as IMAGE; the image it replaces goes unless still in use
    local old
    old=$(docker image inspect --format '{{.Id}}' "$2" 2>/dev/null || true)
    docker tag "$1" "$2"
    if [[ -n $old && $old != "$1" ]]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

image_size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%d MB", $1/1000000}'; }
