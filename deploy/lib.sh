# Shared shell helpers for berth's scripts. Source it; do not run it.

# apt_install_missing FILE: installs the Debian packages listed in FILE (one per line,
# '#' comments) that are not installed yet. Needs root.
apt_install_missing() {
    local list=$1 missing=() p
    while read -r p; do
        [ -n "$p" ] || continue
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list")
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> apt-get install ${missing[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "need root to install: ${missing[*]}" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}
