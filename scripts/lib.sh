# Shared by scripts/test and scripts/develop (sourced, not run).

# Installs the Debian packages that are missing (with sudo when not root).
apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if ((${#missing[@]})); then
        echo "scripts: installing ${missing[*]} from Debian's packages"
        local sudo=""
        [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Prints a free TCP port on loopback.
free_port() {
    .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts Mosquitto on loopback port $1 with its files in folder $2; sets broker_pid.
start_broker() {
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$1" > "$2/mosquitto.conf"
    /usr/sbin/mosquitto -c "$2/mosquitto.conf" > "$2/mosquitto.log" 2>&1 &
    broker_pid=$!
}
