#!/usr/bin/env bash
# Test hosts for prun's remote stages, on this machine only (every address is on 127.0.0.0/8):
#
#   h2, h3   two sshd instances on 127.0.0.2:22 and 127.0.0.3:22, each in its own PID
#            namespace (a process listing inside shows only that host's processes), with a
#            throwaway client key, host keys and known_hosts under the state directory;
#   slurm    a one-node Slurm cluster (slurmctld + slurmd, partition `debug`, node `node1`)
#            on 127.0.0.1 with its own munged; slurmd runs in its own PID namespace too.
#
# Usage: scripts/testhosts.sh up|down|status|env
#   up      start everything (a no-op when already up); prints the time it took
#   down    stop exactly the processes `up` started (by the PIDs it recorded), remove the state
#   status  exit 0 when every recorded process runs and every host answers
#   env     print `export` lines for a shell: PRUN_TESTHOSTS, SLURM_CONF
#
# State directory: $PRUN_TESTHOSTS, default /tmp/prun-testhosts (0700). The tests find the
# hosts there. Inside it: ssh_config (Host h2, h3 with key, known_hosts, BatchMode),
# id_ed25519 (client key), known_hosts, pids (one `name pid starttime` a line), logs.
#
# Needs root (sshd binds port 22 and logs in as the current user; unshare --pid) and the
# packages openssh-server, openssh-client, slurmctld, slurmd, slurm-client, munge, perl,
# util-linux. It installs nothing itself: .ci/run installs the packages.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

STATE="${PRUN_TESTHOSTS:-/tmp/prun-testhosts}"
SSH_HOSTS=("h2 127.0.0.2" "h3 127.0.0.3")
SSH_PORT=22
SLURM_NODE=node1
SLURMCTLD_PORT=6817
SLURMD_PORT=6818

die() { echo "testhosts: $*" >&2; exit 1; }

# A tiny init for a PID namespace: runs the daemon, reaps every orphan (remote sessions'
# grandchildren end up here), forwards TERM/INT/HUP to the daemon and exits with it. When it
# exits, the kernel kills whatever is left in the namespace.
INIT_PL='
$0 = "testhost-init"; my $pid = fork; die "fork: $!" unless defined $pid;
if (!$pid) { exec @ARGV or die "exec $ARGV[0]: $!" }
for my $s (qw(TERM INT HUP)) { $SIG{$s} = sub { kill $s, $pid } }
while (1) {
  my $w = wait;
  if ($w == -1) { next if $!{EINTR}; exit 1 }
  exit(($? & 127) ? 128 + ($? & 127) : $? >> 8) if $w == $pid;
}'

starttime() { # field 22 of /proc/PID/stat (after the command name, which may hold spaces)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

record() { # name pid
    local st
    st=$(starttime "$2") || die "$1 (pid $2) died at once; see $STATE/*.log"
    echo "$1 $2 $st" >>"$STATE/pids"
}

alive() { # pid starttime: the same process is still there
    local st
    st=$(starttime "$1") || return 1
    [[ $st == "$2" ]] || return 1
    # a zombie is not alive
    [[ $(sed -n 's/^State:\s*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null) != Z ]]
}

child_of() { # the one child of PID (unshare's forked child)
    local t
    for _ in $(seq 100); do
        t=$(cat "/proc/$1/task/$1/children" 2>/dev/null || true)
        [[ -n ${t// /} ]] && { echo "${t%% *}"; return 0; }
        sleep 0.05
    done
    return 1
}

wait_for() { # seconds description command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what; see $STATE/*.log"
        sleep 0.1
    done
}

need() {
    local missing=()
    for c in sshd ssh ssh-keygen slurmctld slurmd srun sinfo scancel munged unshare perl setsid; do
        command -v "$c" >/dev/null || [[ -x /usr/sbin/$c ]] || missing+=("$c")
    done
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (install openssh-server openssh-client slurmctld slurmd slurm-client munge; .ci/run does)"
    [[ $(id -u) == 0 ]] || die "needs root (sshd on port 22, PID namespaces)"
}

# Start a daemon in its own PID namespace; records the outer unshare and the namespace init.
start_ns() { # name logfile command...
    local name=$1 log=$2
    shift 2
    setsid unshare --pid --fork --kill-child --mount-proc perl -e "$INIT_PL" "$@" \
        </dev/null >>"$log" 2>&1 &
    local u=$!
    record "$name-unshare" "$u"
    local init
    init=$(child_of "$u") || die "$name: no namespace init under unshare $u; see $log"
    record "$name" "$init"
}

start_plain() { # name logfile command...
    local name=$1 log=$2
    shift 2
    setsid "$@" </dev/null >>"$log" 2>&1 &
    record "$name" "$!"
}

write_ssh() {
    ssh-keygen -q -t ed25519 -N '' -C prun-testhosts -f "$STATE/id_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    : >"$STATE/known_hosts"
    {
        for h in "${SSH_HOSTS[@]}"; do
            set -- $h
            echo "Host $1"
            echo "  HostName $2"
        done
        echo "Host ${SSH_HOSTS[*]%% *} 127.0.0.2 127.0.0.3"
        echo "  User $(id -un)"
        echo "  Port $SSH_PORT"
        echo "  IdentityFile $STATE/id_ed25519"
        echo "  IdentitiesOnly yes"
        echo "  UserKnownHostsFile $STATE/known_hosts"
        echo "  GlobalKnownHostsFile /dev/null"
        echo "  StrictHostKeyChecking yes"
        echo "  BatchMode yes"
        echo "  LogLevel ERROR"
    } >"$STATE/ssh_config"
    for h in "${SSH_HOSTS[@]}"; do
        set -- $h
        mkdir -m 700 "$STATE/$1"
        ssh-keygen -q -t ed25519 -N '' -C "prun-testhosts-$1" -f "$STATE/$1/host_key"
        echo "$2 $(cut -d' ' -f1,2 "$STATE/$1/host_key.pub")" >>"$STATE/known_hosts"
        cat >"$STATE/$1/sshd_config" <<EOF
ListenAddress $2:$SSH_PORT
HostKey $STATE/$1/host_key
PidFile none
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
MaxSessions 64
MaxStartups 64:30:128
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
EOF
    done
}

write_slurm() {
    mkdir -m 700 "$STATE/munge" "$STATE/slurm" "$STATE/slurm/ctld" "$STATE/slurm/d"
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$STATE/munge/munge.key"
    cat >"$STATE/slurm/slurm.conf" <<EOF
# one-node test cluster made by scripts/testhosts.sh
ClusterName=prun-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
SlurmUser=$(id -un)
SlurmdUser=root
StateSaveLocation=$STATE/slurm/ctld
SlurmdSpoolDir=$STATE/slurm/d
SlurmctldPidFile=$STATE/slurm/slurmctld.pid
SlurmdPidFile=$STATE/slurm/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
LaunchParameters=enable_nss_slurm
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MessageTimeout=10
SlurmdTimeout=30
KillWait=5
NodeName=$SLURM_NODE NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=16 Boards=1 SocketsPerBoard=1 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=$SLURM_NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

ssh_ok() { ssh -F "$STATE/ssh_config" -o ConnectTimeout=2 "$1" true; }
slurm_ok() { SLURM_CONF="$STATE/slurm/slurm.conf" timeout 5 sinfo -h -n "$SLURM_NODE" -o %t | grep -qE '^(idle|mix|alloc)'; }

all_alive() {
    [[ -s $STATE/pids ]] || return 1
    while read -r name pid st; do
        alive "$pid" "$st" || { echo "testhosts: $name (pid $pid) is not running" >&2; return 1; }
    done <"$STATE/pids"
}

cmd_status() {
    [[ -d $STATE ]] || { echo "testhosts: down (no $STATE)"; return 1; }
    all_alive || return 1
    for h in "${SSH_HOSTS[@]}"; do
        set -- $h
        ssh_ok "$1" 2>/dev/null || { echo "testhosts: $1 ($2) does not answer" >&2; return 1; }
    done
    slurm_ok || { echo "testhosts: slurm node $SLURM_NODE is not up" >&2; return 1; }
    echo "testhosts: up ($STATE)"
}

cmd_down() {
    [[ -d $STATE ]] || return 0
    if [[ -f $STATE/slurm/slurm.conf ]] && all_alive 2>/dev/null; then
        # cancel what is left on the test cluster before its daemons go
        SLURM_CONF="$STATE/slurm/slurm.conf" timeout 10 scancel -u "$(id -un)" 2>/dev/null || true
    fi
    local -a pids=() sts=()
    if [[ -f $STATE/pids ]]; then
        # reverse order: last started first
        while read -r name pid st; do
            pids=("$pid" "${pids[@]}")
            sts=("$st" "${sts[@]}")
        done <"$STATE/pids"
    fi
    local i
    for i in "${!pids[@]}"; do
        alive "${pids[$i]}" "${sts[$i]}" && kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 10)) left
    while :; do
        left=0
        for i in "${!pids[@]}"; do alive "${pids[$i]}" "${sts[$i]}" && left=1; done
        ((left == 0)) && break
        if ((SECONDS >= deadline)); then
            for i in "${!pids[@]}"; do
                alive "${pids[$i]}" "${sts[$i]}" && kill -KILL "${pids[$i]}" 2>/dev/null || true
            done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -rf "$STATE"
    echo "testhosts: down"
}

cmd_up() {
    need
    if [[ -d $STATE ]]; then
        if cmd_status >/dev/null 2>&1; then
            echo "testhosts: already up ($STATE)"
            return 0
        fi
        cmd_down >/dev/null
    fi
    local t0=${EPOCHREALTIME/./}
    mkdir -m 700 -p "$STATE"
    : >"$STATE/pids"
    trap 'echo "testhosts: up failed; tearing down" >&2; cmd_down >/dev/null' ERR
    # sshd's privilege separation directory (the package's init script normally makes it)
    [[ -d /run/sshd ]] || mkdir -m 755 /run/sshd
    write_ssh
    write_slurm
    for h in "${SSH_HOSTS[@]}"; do
        set -- $h
        start_ns "sshd-$1" "$STATE/$1/sshd.log" "$(command -v sshd || echo /usr/sbin/sshd)" -D -e -f "$STATE/$1/sshd_config"
    done
    start_plain munged "$STATE/munged.log" munged -F -f --key-file="$STATE/munge/munge.key" \
        --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged test -S "$STATE/munge/munge.socket"
    export SLURM_CONF="$STATE/slurm/slurm.conf"
    start_plain slurmctld "$STATE/slurmctld.out" slurmctld -D -i -f "$SLURM_CONF"
    start_ns slurmd "$STATE/slurmd.out" slurmd -D -N "$SLURM_NODE" -f "$SLURM_CONF"
    for h in "${SSH_HOSTS[@]}"; do
        set -- $h
        wait_for 20 "sshd on $1 ($2)" ssh_ok "$1"
    done
    wait_for 60 "slurm node $SLURM_NODE" slurm_ok
    wait_for 30 "srun hostname" timeout 20 srun -t 1 -J prun-testhosts-check hostname
    trap - ERR
    local ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
    printf 'testhosts: up in %d.%03d s (%s)\n' $((ms / 1000)) $((ms % 1000)) "$STATE"
}

cmd_env() {
    echo "export PRUN_TESTHOSTS=$STATE"
    echo "export SLURM_CONF=$STATE/slurm/slurm.conf"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
*) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
