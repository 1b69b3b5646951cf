# Shared by base-images.sh and proxy-image.sh: making minimal images with `docker import` from
# binaries of this machine (no registry is reachable, so nothing is pulled). Source it after
# setting SCRIPT_NAME (the log prefix) and HELP_LINES (the range of the caller's header to print
# for --help, e.g. 2,16).

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Sets FORCE=1 for --force; prints the caller's header for --help; refuses anything else.
parse_force_flag() {
  FORCE=0
  local arg
  for arg in "$@"; do
    case "$arg" in
      --force) FORCE=1 ;;
      -h | --help)
        sed -n "${HELP_LINES}p" "$0" | sed 's/^# \{0,1\}//' >&2
        exit 0
        ;;
      *)
        printf '%s: unknown argument %s (usage: %s [--force])\n' "$SCRIPT_NAME" "$arg" "$0" >&2
        exit 2
        ;;
    esac
  done
}

# Fails unless the docker CLI exists and an engine answers at DOCKER_HOST (or the default socket).
require_engine() {
  command -v docker >/dev/null 2>&1 || die "the docker CLI is missing; run: bash scripts/docker-engine.sh start (it installs docker.io)"
  if ! timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}; run: eval \"\$(bash scripts/docker-engine.sh start | tail -1)\""
  fi
}

# Prints the path of a statically linked busybox, if there is one.
find_static_busybox() {
  local candidate
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$candidate" ]] && ! ldd "$candidate" >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# Sets BUSYBOX to a static busybox, installing Debian's busybox-static when there is none.
ensure_static_busybox() {
  BUSYBOX="$(find_static_busybox || true)"
  if [[ -z "$BUSYBOX" ]]; then
    apt_install busybox-static
    BUSYBOX="$(find_static_busybox)" || die "busybox-static is installed but no static busybox was found"
  fi
}

# Lays out a minimal root filesystem with busybox and its applets in folder $1 (BUSYBOX must be set).
make_busybox_root() {
  local root="$1" applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  # --list-full gives each applet's usual place (bin/sh, usr/bin/wget, sbin/ifconfig...).
  while IFS= read -r applet; do
    [[ -n "$applet" && "$applet" != "bin/busybox" ]] || continue
    mkdir -p "$root/$(dirname "$applet")"
    [[ -e "$root/$applet" || -L "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
  done < <("$BUSYBOX" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
}

# Copies every shared library `ldd` names for binary $1 (`libx.so => /path (0x...)`, and the loader
# `/lib64/ld-linux... (0x...)`) into folder $2 at its own absolute path, following symlinks.
copy_shared_libraries() {
  local binary="$1" root="$2" lib count=0
  while IFS= read -r lib; do
    [[ -n "$lib" ]] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    count=$((count + 1))
  done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  ((count > 0)) || die "ldd listed no libraries for $binary"
  log "copied $count shared libraries"
}
