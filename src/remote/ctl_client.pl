#!/usr/bin/env perl
# `prun ctl` for stages on SSH hosts: the same commands, exit codes and line protocol as
# prun's own client (src/ctl/mod.rs), in perl-base Perl, so that no binary has to be
# copied to the host. The wrapper puts it in the run directory's bin/ for the run only;
# PRUN_CTL names a unix socket that ssh forwards to prun's control socket.
use strict;
use warnings;
use IO::Socket::UNIX;

my ($OK, $FALSE, $USAGE, $ERR, $REFUSED, $UNREACHABLE, $TIMEOUT) = (0, 1, 2, 3, 4, 5, 124);

sub usage {
    print STDERR "usage: prun ctl event set|clear|wait|is-set NAME [--timeout D]\n",
      "       prun ctl sem acquire|release NAME [--timeout D]\n",
      "       prun ctl sem run NAME [--timeout D] -- CMD...\n",
      "(on a remote host only `prun ctl` is available)\n";
    exit $USAGE;
}

sub millis {
    my ($d) = @_;
    return undef unless defined $d;
    my %unit = (ms => 0.001, s => 1, m => 60, h => 3600, '' => 1);
    $d =~ /^(\d+(?:\.\d+)?)(ms|s|m|h|)$/ or do {
        print STDERR "prun ctl: invalid duration `$d` (250ms, 5s, 2m, 1h)\n";
        exit $USAGE;
    };
    return int($1 * $unit{$2} * 1000);
}

sub connect_prun {
    my $path = $ENV{PRUN_CTL} // '';
    if ($path eq '') {
        print STDERR "prun ctl: PRUN_CTL is not set: run this from a stage started by prun\n";
        exit $UNREACHABLE;
    }
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or do {
        print STDERR "prun ctl: cannot reach prun at $path: $!\n";
        exit $UNREACHABLE;
    };
    $s->autoflush(1);
    return $s;
}

# One request on connection $s (or on a connection of its own).
sub request {
    my ($line, $s) = @_;
    my $own = !defined $s;
    $s = connect_prun() if $own;
    print $s "$line\n";
    my $reply = <$s>;
    close $s if $own;
    if (!defined $reply) {
        print STDERR "prun ctl: prun closed the connection without a reply\n";
        exit $UNREACHABLE;
    }
    $reply =~ s/[\r\n]+$//;
    return $reply;
}

sub report {
    my ($reply, $what) = @_;
    return $OK if $reply eq 'OK' || $reply eq 'TRUE';
    return $FALSE if $reply eq 'FALSE';
    if ($reply eq 'TIMEOUT') { print STDERR "prun ctl: timed out: $what\n"; return $TIMEOUT }
    if ($reply =~ /^REFUSED ?(.*)/) { print STDERR "prun ctl: refused: $1\n"; return $REFUSED }
    if ($reply =~ /^ERR ?(.*)/) { print STDERR "prun ctl: $1\n"; return $ERR }
    print STDERR "prun ctl: garbled reply from prun: $reply\n";
    return $UNREACHABLE;
}

usage() unless @ARGV >= 3 && $ARGV[0] eq 'ctl';
shift @ARGV;
my $kind = shift @ARGV;
my $verb = shift @ARGV;
my ($name, $timeout, @cmd);
while (@ARGV) {
    my $a = shift @ARGV;
    if ($a eq '--') { @cmd = @ARGV; last }
    elsif ($a eq '--timeout') { $timeout = millis(shift @ARGV) }
    elsif ($a =~ /^--timeout=(.*)/) { $timeout = millis($1) }
    elsif (!defined $name) { $name = $a }
    elsif ($kind eq 'sem' && $verb eq 'run') { @cmd = ($a, @ARGV); last }
    else { usage() }
}
usage() unless defined $name;
my $t = defined $timeout ? " $timeout" : '';

if ($kind eq 'event') {
    my %line = (set => "EVENT SET $name", clear => "EVENT CLEAR $name",
                wait => "EVENT WAIT $name$t", 'is-set' => "EVENT ISSET $name");
    usage() unless $line{$verb};
    exit report(request($line{$verb}), $verb eq 'wait' ? "waiting for event `$name`" : "event $verb $name");
}
usage() unless $kind eq 'sem';
if ($verb eq 'acquire') { exit report(request("SEM ACQUIRE $name$t"), "waiting for a permit of `$name`") }
if ($verb eq 'release') { exit report(request("SEM RELEASE $name"), "sem release $name") }
usage() unless $verb eq 'run' && @cmd;
# The permit belongs to this connection: if this process dies, the connection closes
# and prun gives the permit back at once.
my $session = connect_prun();
my $code = report(request("SEM HOLD $name$t", $session), "waiting for a permit of `$name`");
exit $code if $code != $OK;
my $pid = fork;
if (!defined $pid) { print STDERR "prun ctl: fork: $!\n"; exit 126 }
if ($pid == 0) {
    { no warnings 'exec'; exec { $cmd[0] } @cmd; }
    print STDERR "prun ctl: cannot run $cmd[0]: $!\n";
    exit($!{ENOENT} ? 127 : 126);
}
local $SIG{INT} = 'IGNORE';
local $SIG{QUIT} = 'IGNORE';
waitpid($pid, 0);
my $status = $?;
report(request("SEM RELEASE $name", $session), "sem release $name");
close $session;
exit(($status & 127) ? 128 + ($status & 127) : $status >> 8);
