//! Benchmark harness (cargo bench target, harness = false): runs real processes wired
//! through one [`QueueRouter`], the way the supervisor will, so `bench/compare.sh` can
//! measure the data plane before `prun run` can execute YAML pipelines.
//!
//! Usage: `route [--delivery shared|broadcast] [--framing lines|nul|bytes]
//!   [--order arrival|writers] [--capacity N] [--sentinel S] [--direct]
//!   --writer CMD [--writer CMD ...]
//!   --readers N --reader CMD`
//! Commands run with `sh -c`; readers inherit stdout. With `--direct`, one writer and one
//! reader are joined by a plain OS pipe, sized like the supervisor's (1→1 queues).
//! Prints one line to stderr: `elapsed_ms=… cpu_ms=… records=… bytes=… max_depth=…
//! blocked_ms=… maxrss_kib=… vcsw=… ivcsw=… per_reader=…` (cpu, maxrss and the context
//! switch counts are this process: the router, not the stages).

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use prun::plan::{Delivery, Framing, Order};
use prun::runtime::router::{QueueConfig, QueueRouter, RouterEvent};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("route: pipe2 failed");
        std::process::exit(1);
    }
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn sh(cmd: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd);
    c
}

fn own_usage() -> libc::rusage {
    // SAFETY: getrusage fills a zeroed struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    }
}

fn maxrss_kib() -> i64 {
    own_usage().ru_maxrss
}

/// CPU time (user + system) of this process: the router's thread, as the stages are
/// separate processes. Unlike wall time it barely moves with the machine's load.
fn cpu_ms() -> i64 {
    let ru = own_usage();
    let ms = |t: libc::timeval| t.tv_sec * 1000 + t.tv_usec / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

struct Args {
    delivery: Delivery,
    framing: Framing,
    order: Order,
    capacity: usize,
    sentinel: Option<String>,
    direct: bool,
    writers: Vec<String>,
    readers: usize,
    reader: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        delivery: Delivery::Shared,
        framing: Framing::Lines,
        order: Order::Arrival,
        capacity: 1024,
        sentinel: None,
        direct: false,
        writers: Vec::new(),
        readers: 1,
        reader: "cat >/dev/null".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--bench" => {}
            "--delivery" => {
                a.delivery = match val()?.as_str() {
                    "shared" => Delivery::Shared,
                    "broadcast" => Delivery::Broadcast,
                    v => return Err(format!("bad delivery {v}")),
                }
            }
            "--framing" => {
                a.framing = match val()?.as_str() {
                    "lines" => Framing::Lines,
                    "nul" => Framing::Nul,
                    "bytes" => Framing::Bytes,
                    v => return Err(format!("bad framing {v}")),
                }
            }
            "--order" => {
                a.order = match val()?.as_str() {
                    "arrival" => Order::Arrival,
                    "writers" => Order::Writers,
                    v => return Err(format!("bad order {v}")),
                }
            }
            "--capacity" => a.capacity = val()?.parse().map_err(|e| format!("{e}"))?,
            "--sentinel" => a.sentinel = Some(val()?),
            "--direct" => a.direct = true,
            "--writer" => a.writers.push(val()?),
            "--readers" => a.readers = val()?.parse().map_err(|e| format!("{e}"))?,
            "--reader" => a.reader = val()?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.writers.is_empty() {
        return Err("at least one --writer".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("route: {e}");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    if a.direct {
        let (r, w) = pipe();
        // Sized as the supervisor sizes a direct pipe.
        // SAFETY: fcntl with integer arguments; failure keeps the default size.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&w),
                libc::F_SETPIPE_SZ,
                prun::runtime::router::DIRECT_PIPE as libc::c_int,
            )
        };
        let mut wr = sh(&a.writers[0])
            .stdout(Stdio::from(w))
            .spawn()
            .expect("spawn writer");
        let mut rd = sh(&a.reader)
            .stdin(Stdio::from(r))
            .spawn()
            .expect("spawn reader");
        let _ = wr.wait();
        let _ = rd.wait();
        eprintln!(
            "elapsed_ms={} maxrss_kib={}",
            t0.elapsed().as_millis(),
            maxrss_kib()
        );
        return ExitCode::SUCCESS;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let cfg = QueueConfig {
        queue: 0,
        name: "bench".into(),
        capacity: a.capacity,
        delivery: a.delivery,
        framing: a.framing,
        sentinel: a.sentinel.map(String::into_bytes),
        order: a.order,
    };
    let router = QueueRouter::start(cfg, tx);
    // Readers first, so broadcast readers see the stream from its first record.
    let mut readers = Vec::new();
    for i in 0..a.readers {
        let (r, w) = pipe();
        readers.push(
            sh(&a.reader)
                .stdin(Stdio::from(r))
                .spawn()
                .expect("spawn reader"),
        );
        router.add_reader(i, w);
    }
    let mut writers = Vec::new();
    for (i, cmd) in a.writers.iter().enumerate() {
        let (r, w) = pipe();
        writers.push(
            sh(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::from(w))
                .spawn()
                .expect("spawn writer"),
        );
        router.add_writer(i, r);
    }
    for w in &mut writers {
        let _ = w.wait();
    }
    router.close_writers();
    loop {
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(RouterEvent::Drained { .. }) => break,
            Ok(RouterEvent::ReaderGone { reader, .. }) => router.reader_exited(reader),
            Ok(_) => {}
            Err(_) => {
                eprintln!("route: no progress for 600 s, aborting");
                router.abort();
                break;
            }
        }
    }
    for r in &mut readers {
        let _ = r.wait();
    }
    let st = router.stats();
    let ru = own_usage();
    let per: Vec<String> = st.per_reader.iter().map(|(_, n)| n.to_string()).collect();
    eprintln!(
        "elapsed_ms={} cpu_ms={} records={} bytes={} max_depth={} blocked_ms={} maxrss_kib={} vcsw={} ivcsw={} per_reader={}",
        t0.elapsed().as_millis(),
        cpu_ms(),
        st.records,
        st.bytes,
        st.max_depth,
        st.blocked_ms,
        maxrss_kib(),
        ru.ru_nvcsw,
        ru.ru_nivcsw,
        per.join(",")
    );
    ExitCode::SUCCESS
}
