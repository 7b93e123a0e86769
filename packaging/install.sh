#!/usr/bin/env bash
# Install zwo-alpaca as a system service: udev rules for ZWO cameras, a service user in the plugdev
# and video groups, a virtualenv with zwo-alpaca in it, and the systemd unit. Safe to run again:
# each step checks first and only changes what differs, and your /etc/default/zwo-alpaca is kept.
#
#   sudo bash packaging/install.sh                 everything, then start the service
#   sudo bash packaging/install.sh --udev-only     just the udev rules (camera access without root)
#   sudo bash packaging/install.sh --uninstall     remove the unit, rules and options file
#                                                  (keeps the user, /opt/zwo-alpaca and /var/lib data)
# Options:
#   --user NAME     service user (default zwo-alpaca)
#   --prefix DIR    where the virtualenv goes (default /opt/zwo-alpaca; the venv is DIR/venv)
#   --exec PATH     run this zwo-alpaca program instead of installing a virtualenv
#   --no-start      install and enable the service, but do not (re)start it
#   --root DIR      write the files under DIR instead of / and skip users, packages, udevadm and
#                   systemctl (for building packages and for the tests)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
user=zwo-alpaca
prefix=/opt/zwo-alpaca
exec_path=""
root=""
udev_only=0
start=1
uninstall=0

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --user) user=${2:?--user needs a name}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
    --exec) exec_path=${2:?--exec needs a path}; shift 2 ;;
    --root) root=${2:?--root needs a folder}; shift 2 ;;
    --udev-only) udev_only=1; shift ;;
    --no-start) start=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$user" in *[!a-z0-9_-]*|"") die "--user must be lower-case letters, digits, - and _" ;; esac

live=1   # act on this machine (users, packages, udev, systemd), not only write files
if [ -n "$root" ]; then
  live=0
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root: sudo bash $0 $*"
fi
[ -n "$exec_path" ] || exec_path="$prefix/venv/bin/zwo-alpaca"

rules_dest="$root/etc/udev/rules.d/99-zwo-asi.rules"
unit_dest="$root/etc/systemd/system/zwo-alpaca.service"
default_dest="$root/etc/default/zwo-alpaca"
have_systemd=0
[ $live -eq 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null && have_systemd=1

changed_rules=0

# install_file SRC DEST MODE: copy when absent or different; say what happened.
install_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    say "unchanged: $dest"
    return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  say "installed: $dest"
  return 0
}

if [ $uninstall -eq 1 ]; then
  if [ $have_systemd -eq 1 ] && systemctl list-unit-files zwo-alpaca.service >/dev/null 2>&1; then
    systemctl disable --now zwo-alpaca.service 2>/dev/null || true
  fi
  for f in "$unit_dest" "$rules_dest" "$default_dest"; do
    if [ -e "$f" ]; then rm -f "$f"; say "removed: $f"; else say "not present: $f"; fi
  done
  if [ $have_systemd -eq 1 ]; then systemctl daemon-reload; fi
  if [ $live -eq 1 ] && command -v udevadm >/dev/null; then udevadm control --reload-rules || true; fi
  say "kept: user $user, $prefix and /var/lib/zwo-alpaca (remove them by hand if you want)"
  exit 0
fi

# --- 1. udev rules: camera access for plugdev, and the usbfs memory limit ---------------------
if install_file "$here/99-zwo-asi.rules" "$rules_dest" 0644; then changed_rules=1; fi
if [ $live -eq 1 ]; then
  if command -v udevadm >/dev/null && [ $changed_rules -eq 1 ]; then
    udevadm control --reload-rules || say "warning: udevadm could not reload the rules (replug the camera or reboot)"
    # Apply to a camera that is already plugged in, without replugging it.
    udevadm trigger --subsystem-match=usb --attr-match=idVendor=03c3 || true
  fi
  usbfs=/sys/module/usbcore/parameters/usbfs_memory_mb
  if [ -w "$usbfs" ]; then
    v=$(cat "$usbfs")
    if [ "$v" -ne 0 ] && [ "$v" -lt 256 ]; then
      echo 256 > "$usbfs"
      say "raised the usbfs memory limit from $v to 256 MB (the udev rule does this at every camera plug-in)"
    fi
  fi
fi
if [ $udev_only -eq 1 ]; then
  getent group plugdev >/dev/null 2>&1 || { [ $live -eq 0 ] || groupadd --system plugdev; }
  say "done. Add yourself to plugdev if you are not in it: sudo usermod -aG plugdev \$USER (then log in again)"
  exit 0
fi

# --- 2. system packages and the service user ----------------------------------------------------
if [ $live -eq 1 ]; then
  missing=()
  if command -v dpkg-query >/dev/null; then
    # gcc + python3-dev build the compiled frame transpose (faster first downloads; optional).
    for p in libusb-1.0-0 python3-venv gcc python3-dev; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ] && [ "$exec_path" = "$prefix/venv/bin/zwo-alpaca" ]; then
      say "installing Debian packages: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
  fi
  for g in plugdev video; do
    getent group "$g" >/dev/null || { groupadd --system "$g"; say "created group $g"; }
  done
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/zwo-alpaca --no-create-home \
      --shell /usr/sbin/nologin --comment "zwo-alpaca camera server" "$user"
    say "created user $user"
  fi
  # -a: add to these groups, keep any others the user is already in.
  usermod -aG plugdev,video "$user"
fi

# --- 3. the program: a virtualenv with zwo-alpaca from this checkout ----------------------------
if [ $live -eq 1 ] && [ "$exec_path" = "$prefix/venv/bin/zwo-alpaca" ]; then
  if [ ! -x "$prefix/venv/bin/python" ]; then
    python3 -m venv "$prefix/venv"
    say "created virtualenv $prefix/venv"
  fi
  spec="$repo"
  # pyzwoasi bundles ZWO's SDK for x86-64 only; on ARM the SDK comes from ZWO or INDI (docs/raspberry-pi.md).
  case "$(uname -m)" in x86_64|amd64) spec="$repo[sdk]" ;; esac
  say "installing zwo-alpaca into $prefix/venv (pip install $spec)"
  "$prefix/venv/bin/python" -m pip install -q --upgrade pip
  "$prefix/venv/bin/python" -m pip install -q --upgrade "$spec"
fi
if [ $live -eq 1 ] && [ ! -x "$exec_path" ]; then
  die "$exec_path is not an executable zwo-alpaca"
fi

# --- 4. options file (kept if present) and the systemd unit -------------------------------------
if [ -e "$default_dest" ]; then
  say "kept your options: $default_dest"
else
  install -D -m 0644 "$here/zwo-alpaca.default" "$default_dest"
  say "installed: $default_dest"
fi
tmp_unit=$(mktemp)
trap 'rm -f "$tmp_unit"' EXIT
# The unit names the default user and program; put in the ones chosen here.
sed -e "s|^User=zwo-alpaca\$|User=$user|" \
    -e "s|^ExecStart=/opt/zwo-alpaca/venv/bin/zwo-alpaca |ExecStart=$exec_path |" \
    "$here/zwo-alpaca.service" > "$tmp_unit"
install_file "$tmp_unit" "$unit_dest" 0644 || true
# The unit's config and history folder (its StateDirectory=, which systemd creates only at the first
# start): made now, so doctor and a start by hand without systemd can use it too.
state_dir=/var/lib/zwo-alpaca
if [ $live -eq 1 ] && [ ! -d "$state_dir" ]; then
  install -d -m 0755 -o "$user" -g "$(id -gn "$user")" "$state_dir"
  say "created $state_dir (config and camera history)"
fi

if [ $have_systemd -eq 1 ]; then
  systemctl daemon-reload
  systemctl enable zwo-alpaca.service >/dev/null 2>&1 && say "enabled: starts at boot"
  if [ $start -eq 1 ]; then
    if systemctl is-active --quiet zwo-alpaca.service; then
      # The program or the unit may have changed: run the new one.
      systemctl restart zwo-alpaca.service && say "restarted zwo-alpaca"
    else
      systemctl start zwo-alpaca.service && say "started zwo-alpaca"
    fi
  fi
elif [ $live -eq 1 ]; then
  say "systemd is not running here: start the server with: sudo -u $user $exec_path serve --config $state_dir/config.json"
fi

say "done."
if [ $live -eq 1 ]; then
  say "check the machine with: sudo -u $user $exec_path doctor --user $user --config $state_dir/config.json"
  say "logs: journalctl -u zwo-alpaca -f"
fi
