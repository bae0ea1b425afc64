# prun's remote wrapper. Sent inline with every remote command (hex-encoded, run by
# `perl -e`); needs nothing but perl-base and /bin/sh-level tools on the remote side, and
# leaves nothing installed. Its arguments are words, each `x` + the hex of a field (safe in any login shell, empty fields too):
#
#   run     NONCE RUNID GROUP DEATHSIG GRACE_MS CWD CLIENT NENV K=V... ARGV...
#   stop    PGID STARTTIME SIGNAL
#   cleanup RUNID
#
# run: starts ARGV (in its own process group when GROUP is "own", in the wrapper's when
# "same", as under Slurm where the engine signals the task's group), writes one start line
# and one end line to stderr, each `\x1eprun:NONCE:` + text + `\n`, which prun strips from
# the stream:
#   S pgid=P start=T node=N [job=J step=S]      the instance runs as group P
#   D gone | D kept | D shared                  (own group) the run directory at its end
#   E exit N | E signal NAME | E nostart MSG    how it ended (exactly)
# It ends the whole group (DEATHSIG, GRACE_MS, then SIGKILL; descendants that left the
# group included) when its parent changes, its stdout or stderr loses its reader (prun or
# the connection is gone), or it gets SIGHUP. `${run.dir}` arrives as the marker \x01run.dir\x01
# and is replaced by a private 0700 directory, $TMPDIR/prun-UID-RUNID (shared by the run's
# instances on this host, removed by `cleanup` or by the last wrapper of a dead prun).
use strict;
use warnings;
use POSIX ();
use Fcntl qw(:flock);
use Config;

my @a = map { pack "H*", substr($_, 1) } @ARGV;
my $version = shift @a;
die "prun wrapper: protocol $version, expected 1\n" unless $version eq '1';
my $mode = shift @a;
my $MARK = "\x01run.dir\x01";
my @signame = split ' ', $Config{sig_name};

sub run_dir_of {
    my ($runid) = @_;
    my $base = $ENV{TMPDIR};
    $base = '/tmp' unless defined $base && $base =~ m{^/[A-Za-z0-9._/-]*$} && -d $base;
    $base =~ s{/+$}{};
    return "$base/prun-$<-$runid";
}

sub starttime {
    my ($pid) = @_;
    open(my $fh, '<', "/proc/$pid/stat") or return undef;
    my $s = <$fh>;
    close $fh;
    return undef unless defined $s && $s =~ /\)\s+(.*)$/s;
    my @f = split ' ', $1;
    return $f[19];
}

if ($mode eq 'stop') {
    my ($pgid, $start, $sig) = @a;
    if (-d "/proc/$$") {
        my $st = starttime($pgid);
        exit 3 unless defined $st && $st eq $start;
    }
    exit(kill($sig, -$pgid) ? 0 : 3);
}

if ($mode eq 'cleanup') {
    my $dir = run_dir_of($a[0]);
    my @st = lstat $dir;
    if (@st && -d _ && $st[4] == $<) {
        system('rm', '-rf', '--', $dir);
    }
    exit 0;
}

die "prun wrapper: unknown mode $mode\n" unless $mode eq 'run';
my ($nonce, $runid, $group, $deathsig, $grace_ms, $cwd, $client, $nenv) = splice @a, 0, 8;
my @env = splice @a, 0, $nenv;
my @argv = @a;
my $tag = "\x1eprun:$nonce:";
$SIG{PIPE} = 'IGNORE';

sub report {
    my ($line) = @_;
    syswrite STDERR, "$tag$line\n";
}

# The run directory: private, ours, 0700; shared by this run's instances on this host.
# Each user holds a shared lock on its .users file; the last one to leave removes the
# directory. A directory removed between our mkdir and our lock is made again.
my $dir = run_dir_of($runid);
my $lock;
for my $attempt (1 .. 5) {
    if (!mkdir($dir, 0700)) {
        my @st = lstat $dir;
        unless (@st && -d _ && $st[4] == $< && ($st[2] & 077) == 0) {
            report("S pgid=0 start=0 node=" . node());
            report("E nostart cannot use the run directory $dir on this host: it exists and is not a private directory of this user");
            exit 126;
        }
    }
    undef $lock;
    open($lock, '>>', "$dir/.users") or do {
        next if $attempt < 5 && !-d $dir;
        report("S pgid=0 start=0 node=" . node());
        report("E nostart cannot use the run directory $dir: $!");
        exit 126;
    };
    flock($lock, LOCK_SH);
    my @held = stat $lock;
    my @now = stat "$dir/.users";
    last if @now && $now[0] == $held[0] && $now[1] == $held[1];
}

# CLIENT (when not empty): the `prun ctl` client, put in the run directory's bin/ (on
# PATH) for the run; PRUN_CTL then names a socket that ssh forwards to prun.
if (length $client && !-x "$dir/bin/prun") {
    mkdir "$dir/bin", 0700;
    my $tmp = "$dir/bin/.prun.$$";
    if (open(my $fh, '>', $tmp)) {
        print $fh $client;
        close $fh;
        chmod 0700, $tmp;
        rename $tmp, "$dir/bin/prun";
    }
}

s/\Q$MARK\E/$dir/g for @argv, @env;
$cwd =~ s/\Q$MARK\E/$dir/g;
for (@env) {
    my ($k, $v) = split /=/, $_, 2;
    $ENV{$k} = $v;
}
$ENV{PRUN_RUN_DIR} = $dir;
$ENV{PATH} = "$dir/bin:" . ($ENV{PATH} // '/usr/bin:/bin') if -d "$dir/bin";

sub node { $ENV{SLURMD_NODENAME} // (POSIX::uname())[1] }

# Adopt orphaned descendants (Linux), so that processes that leave the group are found.
my %prctl = (x86_64 => 157, aarch64 => 167, i386 => 172, i686 => 172, arm => 172,
             ppc64 => 171, ppc64le => 171, s390x => 172, riscv64 => 167);
my ($arch) = $Config{archname} =~ /^([^-]+)/;
eval { syscall($prctl{$arch}, 36, 1, 0, 0, 0) if $prctl{$arch} && $^O eq 'linux' };

my $parent = getppid();
# The instance's stderr comes through the wrapper (a pipe): when the reader is gone the
# wrapper keeps draining it, so a stop handler that writes to stderr is not killed by
# SIGPIPE, and the end line always comes after the instance's last stderr byte.
pipe(my $err_r, my $err_w) or die "pipe: $!";
pipe(my $log_r, my $log_w) or die "pipe: $!";
my $child = fork;
if (!defined $child) {
    report("S pgid=0 start=0 node=" . node());
    report("E nostart fork: $!");
    exit 126;
}
if ($child == 0) {
    close $err_r;
    close $log_r;
    POSIX::dup2(fileno($log_w), 2) or POSIX::_exit(126);
    close $log_w;
    POSIX::setpgid(0, 0) if $group eq 'own';
    $SIG{$_} = 'DEFAULT' for qw(PIPE INT TERM HUP QUIT CHLD USR1 USR2 ALRM);
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new());
    if (length $cwd && !chdir $cwd) {
        syswrite $err_w, "cannot enter the directory $cwd: $!";
        POSIX::_exit(126);
    }
    { no warnings 'exec'; exec { $argv[0] } @argv; }
    syswrite $err_w, "$argv[0]: $!";
    POSIX::_exit(127);
}
close $err_w;
close $log_w;
my $pgid = $group eq 'own' ? $child : getpgrp();
POSIX::setpgid($child, $child) if $group eq 'own';
my $failed = '';
while (1) {
    my $n = sysread $err_r, my $buf, 4096;
    last unless $n;
    $failed .= $buf;
}
close $err_r;
my $start = starttime($child) // 0;
my $jobinfo = defined $ENV{SLURM_JOB_ID}
    ? " job=$ENV{SLURM_JOB_ID} step=" . ($ENV{SLURM_STEP_ID} // $ENV{SLURM_STEPID} // '')
    : '';
report("S pgid=$pgid start=$start node=" . node() . $jobinfo);

my $status;
my $gone = '';
# Stop signals to the wrapper go to the instance (under Slurm the engine signals the
# whole task group, wrapper included: then the instance has its copy already).
for my $s (qw(TERM INT QUIT USR1 USR2)) {
    $SIG{$s} = sub { kill($s, -$pgid) if $group eq 'own' };
}
$SIG{HUP} = sub { $gone ||= 'hangup' };
$SIG{CHLD} = sub { };

sub reap {
    while ((my $p = waitpid(-1, POSIX::WNOHANG())) > 0) {
        $status = $? if $p == $child;
    }
}

sub descendants {
    my %kids;
    opendir(my $d, '/proc') or return ();
    for my $p (grep { /^\d+$/ } readdir $d) {
        open(my $fh, '<', "/proc/$p/stat") or next;
        my $s = <$fh>;
        next unless defined $s && $s =~ /\)\s+\S+\s+(\d+)/;
        push @{ $kids{$1} }, $p;
    }
    my @out;
    my @todo = ($$);
    while (@todo) {
        my $p = shift @todo;
        for my $k (@{ $kids{$p} || [] }) { push @out, $k; push @todo, $k }
    }
    return @out;
}

sub kill_all {
    my ($sig) = @_;
    kill $sig, -$pgid if $group eq 'own';
    my @d = descendants();
    kill $sig, @d if @d;
    return scalar @d;
}

# One pass: relay the instance's stderr (waiting at most $wait seconds for it), and
# notice when the reader of our stdout or stderr is gone: select() reports a pipe's
# write end readable once its reader has closed it (POLLERR).
my $log_open = 1;
my $err_dead = 0;
sub pump {
    my ($wait) = @_;
    my $rin = '';
    vec($rin, fileno($log_r), 1) = 1 if $log_open;
    vec($rin, 1, 1) = 1;
    vec($rin, 2, 1) = 1 unless $err_dead;
    my $n = select(my $rout = $rin, undef, undef, $wait);
    return if $n <= 0;
    if ($log_open && vec($rout, fileno($log_r), 1)) {
        my $got = sysread $log_r, my $buf, 65536;
        if (!$got) {
            $log_open = 0;
        } elsif (!$err_dead) {
            my $off = 0;
            while ($off < $got) {
                my $w = syswrite STDERR, $buf, $got - $off, $off;
                if (!defined $w) {
                    next if $!{EINTR} || $!{EAGAIN};
                    $err_dead = 1;
                    $gone ||= 'reader';
                    last;
                }
                $off += $w;
            }
        }
    }
    $gone ||= 'reader' if vec($rout, 1, 1) || (!$err_dead && vec($rout, 2, 1));
}

if ($failed eq '') {
    while (!defined $status) {
        pump(0.1);
        reap();
        last if defined $status;
        $gone ||= 'parent' if getppid() != $parent;
        last if $gone;
    }
} else {
    waitpid($child, 0);
}

# A clock with sub-second steps from perl-base alone (Linux: /proc/uptime).
sub now {
    if (open(my $f, '<', '/proc/uptime')) {
        my ($t) = split ' ', scalar <$f>;
        return $t if defined $t;
    }
    return time;
}
if ($gone) {
    # prun or the connection is gone: end the whole instance, then leave.
    $SIG{$_} = 'IGNORE' for qw(TERM INT QUIT USR1 USR2 HUP);
    kill_all($deathsig);
    my $deadline = now() + $grace_ms / 1000;
    while (now() < $deadline) {
        pump(0.05);
        reap();
        last if !descendants() && !($group eq 'own' && kill(0, -$pgid));
    }
    kill_all('KILL');
    reap();
    forget_ctl();
    remove_if_last();
    report("E gone $gone");
    exit 255;
}

# The instance's main process ended: what is left of it goes too (as at the end of a
# local instance's run), its last stderr bytes are passed on, then the exact status.
kill 'KILL', -$pgid if $group eq 'own';
for (1 .. 3) { last unless kill_all('KILL'); reap(); select(undef, undef, undef, 0.01) }
reap();
forget_ctl();
# Under Slurm no cleanup command comes at the end (it could wait in the queue): the
# last step of the run on this node removes the directory. Over SSH the last user
# removes it only if nothing but prun's own files is in it (nothing a later instance
# could need), and says what it did, so that prun sends a cleanup at the end only to
# hosts where something was left: `D gone` (removed), `D kept` (the last user, the
# directory holds files), `D shared` (other instances of the run still use it).
if ($group eq 'same') {
    remove_if_last();
} elsif (flock($lock, LOCK_EX | LOCK_NB)) {
    if (pristine()) {
        system('rm', '-rf', '--', $dir);
        report("D gone");
    } else {
        report("D kept");
    }
} else {
    report("D shared");
}
my $drain_until = now() + 2;
pump(0.05) while $log_open && now() < $drain_until;
if ($failed ne '') {
    $failed =~ s/[\r\n]+/ /g;
    report("E nostart $failed");
    exit 127;
}
if ($status & 127) {
    my $n = $status & 127;
    report("E signal " . ($signame[$n] // $n) . (($status & 128) ? ' core' : ''));
    exit(128 + $n);
}
report("E exit " . ($status >> 8));
exit($status >> 8);

# The forwarded control socket of this instance (made by sshd for the run) goes with it.
sub forget_ctl {
    my $p = $ENV{PRUN_CTL} // '';
    unlink $p if $p =~ m{^/tmp/prun-ctl-[0-9a-f]+\.sock$} && -S $p;
}

# Remove the run directory when no other instance of the run uses it (prun is gone).
# Only prun's own files in the run directory: its lock file and the ctl client.
sub pristine {
    opendir(my $d, $dir) or return 0;
    for my $e (readdir $d) {
        next if $e eq '.' || $e eq '..' || $e eq '.users';
        return 0 unless $e eq 'bin' && -d "$dir/bin" && !-l "$dir/bin";
        opendir(my $b, "$dir/bin") or return 0;
        for my $f (readdir $b) {
            next if $f eq '.' || $f eq '..' || $f eq 'prun' || $f =~ /^\.prun\.\d+$/;
            return 0;
        }
    }
    return 1;
}

sub remove_if_last {
    if (flock($lock, LOCK_EX | LOCK_NB)) {
        system('rm', '-rf', '--', $dir);
    }
}
