#!/usr/bin/env bash
# Follows the operator guide's systemd path (docs/guides/en/operator.md, the ```sh systemd block) on a fresh
# Debian 12 machine with systemd as PID 1, and checks that it reaches a running, hardened Orchard.
#
# What it proves, on that machine: the guide's commands, run literally and in order as root from a source
# checkout, succeed; `systemctl enable --now orchard` returns with the service active (Type=notify) and the
# guide's `curl` of /readyz answers `ok` over TLS; the service runs as the `orchard` user (not root), with
# NoNewPrivs, no capabilities, a seccomp filter, / read-only and only /var/lib/orchard writable
# (ProtectSystem=strict), its own /tmp; `systemd-analyze security` rates the unit (score printed, must be at
# most MAX_EXPOSURE); `journalctl -u orchard` has its start lines; after `kill -9` of its main PID systemd
# starts it again (Restart=on-failure) and it answers again; after a reboot of the machine it is running again
# (enabled) with the same CA.
#
# How: a Debian 12 root made once with debootstrap (the default variant: what a minimal Debian install has, plus
# curl, which the guide asks for), copied afresh for every run and booted with `systemd-nspawn --boot` (systemd
# as PID 1, private network: only its own loopback). The checkout the guide's commands run in is deploy/ and
# the `orchard` binary at target/release/orchard (a debug build stands in for the release build the guide names;
# same Debian, so the shared libraries match). Commands reach the machine through nsenter; nothing on the host
# but the machine's directory changes.
#
# Needs: root on a Debian 12 host (no systemd as PID 1 needed, no container engine) that may create namespaces
# (CAP_SYS_ADMIN); Debian's package mirror (debootstrap and, if missing, the packages debootstrap and
# systemd-container are installed with apt-get); about 1 GB of disk under ORCHARD_FRESH_ROOT.
# Takes: the first run about 3 minutes for debootstrap plus the build of the binary; later runs about a minute
# (the Debian root is kept in ORCHARD_FRESH_ROOT/base, the machine is made anew from it each run).
# Idempotent: run it again at will; it ends the machine it booted (and one a killed earlier run left behind).
# Not part of the test suite (it needs the package mirror and minutes); tests/guide_commands.rs follows the same
# block without systemd as PID 1. The results of a run are kept in docs/fresh-machine-check.md.
#
# Environment:
#   ORCHARD_FRESH_ROOT   where the Debian root and the machine live (default /var/tmp/orchard-fresh-machine)
#   ORCHARD_BINARY       an `orchard` binary built on this host (default: built here with cargo)
#   MAX_EXPOSURE         highest accepted `systemd-analyze security` exposure (default 2.0)
#
# Usage: sudo scripts/fresh-machine-check.sh [summary-file]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
fresh_root=${ORCHARD_FRESH_ROOT:-/var/tmp/orchard-fresh-machine}
max_exposure=${MAX_EXPOSURE:-2.0}
summary_file=${1:-}
base=$fresh_root/base
machine=$fresh_root/machine
pid_file=$fresh_root/nspawn.pid
log=$fresh_root/last-run.log
machine_name=orchard-fresh

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'fresh-machine-check: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, systemd-nspawn, nsenter)"
# shellcheck disable=SC1091
. /etc/os-release
if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
  say "warning: the host is ${PRETTY_NAME:-unknown}, not Debian 12: the binary's shared libraries may not match"
fi

mkdir -p "$fresh_root"
: > "$log"

# --- tools --------------------------------------------------------------------------------------------------
missing=()
command -v debootstrap > /dev/null || missing+=(debootstrap)
command -v systemd-nspawn > /dev/null || missing+=(systemd-container)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >> "$log"
fi

# --- a machine left by an earlier run that was killed: end it (only that process, by its id) -----------------
end_machine() {
  local pid
  pid=$(cat "$pid_file" 2> /dev/null) || return 0
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "systemd-nspawn.*--directory=$machine "; then
    kill -TERM "$pid" 2> /dev/null || true # nspawn shuts the machine down cleanly on SIGTERM
    for _ in $(seq 120); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2> /dev/null || true; fi
  fi
  rm -f "$pid_file"
}
end_machine
trap end_machine EXIT

# --- the binary ---------------------------------------------------------------------------------------------
binary=${ORCHARD_BINARY:-}
if [ -z "$binary" ]; then
  say "building orchard (cargo build --workspace --all-features --locked --bin orchard)"
  (cd "$repo" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --workspace --all-features --locked --bin orchard) >> "$log" 2>&1 ||
    die "the build failed: see $log"
  binary=$repo/target/debug/orchard
fi
[ -x "$binary" ] || die "no binary at $binary"

# --- a fresh Debian 12 --------------------------------------------------------------------------------------
if [ ! -e "$base/.complete" ]; then
  say "making a Debian 12 root with debootstrap (a few minutes, once)"
  rm -rf "$base"
  # The default variant: Debian's required and important packages (systemd as init, libssl3, …), plus curl
  # for the guide's last step (the guide says to install it). The mirror is debootstrap's default.
  debootstrap --include=curl bookworm "$base" >> "$log" 2>&1 || die "debootstrap failed: see $log"
  touch "$base/.complete"
fi
say "a fresh machine from the Debian root"
rm -rf "$machine"
cp -a "$base" "$machine"
rm -f "$machine/.complete"
echo "$machine_name" > "$machine/etc/hostname"
: > "$machine/etc/machine-id" # a new machine: systemd makes its id at first boot

# The source checkout the guide's commands run in: deploy/ and the binary where `cargo build --release` puts it.
checkout=$machine/root/orchard
mkdir -p "$checkout/target/release"
cp -a "$repo/deploy" "$checkout/"
install -m 0755 "$binary" "$checkout/target/release/orchard"
# The guide's block, literally.
awk '/^```sh systemd$/ {inside = 1; next} /^```/ {inside = 0} inside' "$repo/docs/guides/en/operator.md" \
  > "$checkout/guide-systemd.sh"
[ -s "$checkout/guide-systemd.sh" ] || die "no \`\`\`sh systemd block in docs/guides/en/operator.md"
guide_curl=$(grep '^curl ' "$checkout/guide-systemd.sh") || die "the guide's block has no curl step"

# --- boot ---------------------------------------------------------------------------------------------------
leader=
boot() {
  # --register=no --keep-unit: there is no systemd (and no system bus) on the host to register with.
  setsid systemd-nspawn --directory="$machine" --boot --register=no --keep-unit --private-network \
    --console=passive --machine="$machine_name" >> "$log" 2>&1 < /dev/null &
  echo $! > "$pid_file"
  local nspawn_pid=$!
  leader=
  # The machine's PID 1 is the child of nspawn that runs systemd (nspawn's own short-lived children do not).
  for _ in $(seq 100); do
    for child in $(pgrep -P "$nspawn_pid"); do
      [ "$(cat "/proc/$child/comm" 2> /dev/null)" = systemd ] && leader=$child
    done
    [ -n "$leader" ] && break
    [ -d "/proc/$nspawn_pid" ] || die "systemd-nspawn ended: see $log"
    sleep 0.2
  done
  [ -n "$leader" ] || die "the machine did not start: see $log"
  # Until systemd has made its socket, systemctl cannot reach it: ask again for at most two minutes.
  local state=
  for _ in $(seq 240); do
    state=$(in_machine systemctl is-system-running 2> /dev/null) || true
    case $state in running | degraded) break ;; esac
    sleep 0.5
  done
  say "booted: systemd as PID 1 (host pid $leader), system $state"
  [ "$state" = running ] || [ "$state" = degraded ] || die "the machine did not boot: $state"
}
# A command inside the machine, as root with a login's environment.
in_machine() {
  nsenter --target "$leader" --all env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

results=()
failed=0
record() { # record NAME PASS|FAIL DETAIL
  results+=("$(printf '%-4s  %-34s %s' "$2" "$1" "$3")")
  [ "$2" = PASS ] || failed=1
  printf '%-4s  %-34s %s\n' "$2" "$1" "$3" >&2
}

boot
init=$(in_machine cat /proc/1/comm)
record "systemd is PID 1" "$([ "$init" = systemd ] && echo PASS || echo FAIL)" "PID 1 is $init, $(in_machine systemctl --version | head -n 1)"

# --- the guide's systemd path ---------------------------------------------------------------------------------
say "following the guide's systemd block"
if in_machine bash -c 'cd /root/orchard && bash -e -x guide-systemd.sh' >> "$log" 2>&1; then
  record "the guide's systemd block" PASS "$(grep -c . "$checkout/guide-systemd.sh") commands, each exit 0 (curl: ok)"
else
  record "the guide's systemd block" FAIL "a command failed: see $log"
fi

active=$(in_machine systemctl is-active orchard) || true
record "systemctl is-active orchard" "$([ "$active" = active ] && echo PASS || echo FAIL)" "$active"
enabled=$(in_machine systemctl is-enabled orchard) || true
record "systemctl is-enabled orchard" "$([ "$enabled" = enabled ] && echo PASS || echo FAIL)" "$enabled"

main_pid=$(in_machine systemctl show --property=MainPID --value orchard)
# shellcheck disable=SC2016 # the awk program is in single quotes on purpose
status() { in_machine awk -v key="$1:" '$1 == key {print $2}' "/proc/$main_pid/status"; }
uid=$(status Uid)
orchard_uid=$(in_machine getent passwd orchard | cut -d: -f3)
record "runs as User=orchard" "$([ -n "$uid" ] && [ "$uid" = "$orchard_uid" ] && [ "$uid" != 0 ] && echo PASS || echo FAIL)" \
  "main pid $main_pid, uid $uid (orchard is $orchard_uid, a system user: $(in_machine getent passwd orchard))"
nnp=$(status NoNewPrivs)
record "NoNewPrivileges" "$([ "$nnp" = 1 ] && echo PASS || echo FAIL)" "NoNewPrivs: $nnp"
cap_eff=$(status CapEff) cap_prm=$(status CapPrm) cap_bnd=$(status CapBnd) cap_amb=$(status CapAmb)
caps_none=FAIL
[ "$cap_eff$cap_prm$cap_bnd$cap_amb" = "$(printf '0%.0s' $(seq 64))" ] && caps_none=PASS # four masks of 16 hex digits
record "no capabilities" "$caps_none" "CapEff $cap_eff CapPrm $cap_prm CapBnd $cap_bnd CapAmb $cap_amb"
seccomp=$(status Seccomp)
record "system call filter" "$([ "$seccomp" = 2 ] && echo PASS || echo FAIL)" "Seccomp: $seccomp (2 = filter)"
# The service's own view of its mounts (fields: 5 the mount point, 6 its options).
mounts=$(in_machine cat "/proc/$main_pid/mountinfo")
root_opts=$(awk '$5 == "/" {print $6}' <<< "$mounts" | tail -n 1)
state_opts=$(awk '$5 == "/var/lib/orchard" {print $6}' <<< "$mounts" | tail -n 1)
etc_opts=$(awk '$5 == "/etc" {print $6}' <<< "$mounts" | tail -n 1)
protect=FAIL
[[ $root_opts == ro* ]] && [[ $state_opts == rw* ]] && { [ -z "$etc_opts" ] || [[ $etc_opts == ro* ]]; } && protect=PASS
record "ProtectSystem=strict" "$protect" "/ ${root_opts%%,*}, /var/lib/orchard ${state_opts%%,*}"
private_tmp=$(awk '$5 == "/tmp" {n++} END {print n + 0}' <<< "$mounts")
record "PrivateTmp" "$([ "$private_tmp" -ge 1 ] && echo PASS || echo FAIL)" "/tmp is its own mount"

security=$(in_machine systemd-analyze security --no-pager orchard.service 2>&1) || true
rating=$(sed -n 's/.*Overall exposure level for orchard.service: //p' <<< "$security")
exposure=$(awk '{print $1}' <<< "$rating")
exposure_ok=FAIL
[ -n "$exposure" ] && awk -v e="$exposure" -v m="$max_exposure" 'BEGIN {exit !(e <= m)}' && exposure_ok=PASS
record "systemd-analyze security" "$exposure_ok" "exposure ${rating:-unknown} (at most $max_exposure)"
printf '%s\n' "$security" >> "$log"

readyz=$(in_machine bash -c "$guide_curl" 2>&1) || true
record "the guide's curl of /readyz" "$([ "$readyz" = ok ] && echo PASS || echo FAIL)" "$readyz"

journal=$(in_machine journalctl --unit=orchard --no-pager --output=cat)
started_lines=$(grep -c -e 'Started orchard.service' -e '"orchard serving"' -e 'listening on https://' <<< "$journal" || true)
record "journalctl -u orchard" "$([ "$started_lines" -ge 3 ] && echo PASS || echo FAIL)" \
  "$(grep -c . <<< "$journal") lines; start lines: $(grep -m 1 -o 'listening on https://[^ ]*' <<< "$journal")"

# --- Restart= -------------------------------------------------------------------------------------------------
in_machine kill -KILL "$main_pid"
new_pid=0 again=
for _ in $(seq 120); do
  new_pid=$(in_machine systemctl show --property=MainPID --value orchard)
  if [ "$new_pid" != 0 ] && [ "$new_pid" != "$main_pid" ] && [ "$(in_machine systemctl is-active orchard)" = active ]; then
    again=$(in_machine bash -c "$guide_curl" 2> /dev/null) && [ "$again" = ok ] && break
  fi
  sleep 0.5
done
restarts=$(in_machine systemctl show --property=NRestarts --value orchard)
record "Restart= after kill -9" "$([ "$again" = ok ] && [ "$new_pid" != "$main_pid" ] && echo PASS || echo FAIL)" \
  "pid $main_pid killed, now pid $new_pid, NRestarts=$restarts, /readyz: ${again:-no answer}"

# --- reboot: enabled, and the same state ---------------------------------------------------------------------
ca_before=$(in_machine sha256sum /var/lib/orchard/server-ca.pem | cut -c1-16)
say "rebooting the machine"
end_machine
boot
after_boot=
for _ in $(seq 120); do
  after_boot=$(in_machine bash -c "$guide_curl" 2> /dev/null) && [ "$after_boot" = ok ] && break
  sleep 0.5
done
ca_after=$(in_machine sha256sum /var/lib/orchard/server-ca.pem | cut -c1-16)
record "running again after a reboot" "$([ "$after_boot" = ok ] && [ "$ca_before" = "$ca_after" ] && echo PASS || echo FAIL)" \
  "is-active $(in_machine systemctl is-active orchard), /readyz ${after_boot:-no answer}, server CA ${ca_after} (before ${ca_before})"

# --- summary --------------------------------------------------------------------------------------------------
{
  echo "fresh-machine-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -r), $(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo '?')"
  echo "machine: Debian $(cat "$machine/etc/debian_version") (debootstrap bookworm), booted with systemd-nspawn --boot"
  printf '%s\n' "${results[@]}"
  if [ "$failed" = 0 ]; then echo "result: every check passed"; else echo "result: FAILED (log: $log)"; fi
} | tee ${summary_file:+"$summary_file"}
exit "$failed"
