//! `prun plan`: the plan as readable text.

use std::fmt::Write;

use super::*;

pub fn render(p: &Plan) -> String {
    let mut o = String::new();
    let name = |id: StageId| p.stages[id].name.as_str();
    let _ = writeln!(o, "pipeline {}", p.name);
    let _ = writeln!(o, "\ninstances:");
    for s in &p.stages {
        let instances = match &s.instances {
            Instances::Replicas {
                count,
                named_by_index,
            } if *named_by_index => {
                let names: Vec<String> = (0..*count).map(|i| format!("{}.{i}", s.name)).collect();
                if names.len() > 6 {
                    format!(
                        "{} … {} ({count} replicas)",
                        names[0],
                        names[names.len() - 1]
                    )
                } else {
                    names.join(" ")
                }
            }
            Instances::Replicas { .. } => s.name.clone(),
            Instances::Foreach { source, parallel } => {
                let what = match (source, s.batch) {
                    (ForeachSource::Queue(q), Some(n)) => format!(
                        "block of {n} records of queue {} (on stdin)",
                        p.queues.get(*q).map(|q| q.name.as_str()).unwrap_or("?")
                    ),
                    _ => describe_source(p, source),
                };
                if *parallel == usize::MAX {
                    format!("{}.N, one per {what} (all at once)", s.name)
                } else {
                    format!("{}.N, one per {what} (parallel {parallel})", s.name)
                }
            }
        };
        let mut extra = Vec::new();
        if !s.on.is_empty() {
            let names: Vec<&str> = s.on.iter().map(|h| p.hosts[*h].name.as_str()).collect();
            extra.push(format!("on {}", names.join(", ")));
        } else if !p.hosts.is_empty() {
            extra.push("on this machine".to_string());
        }
        if let Some(h) = &s.halt {
            let mut when = Vec::new();
            if let Some(t) = h.fail {
                when.push(format!("{} failed", threshold(t)));
            }
            if let Some(t) = h.success {
                when.push(format!("{} succeeded", threshold(t)));
            }
            let how = match h.when {
                HaltWhen::Soon => "soon",
                HaltWhen::Now => "now",
            };
            extra.push(format!("halt {how} once {}", when.join(" or ")));
        }
        if s.daemon {
            extra.push("daemon".to_string());
        }
        if !s.semaphores.is_empty() {
            let names: Vec<&str> = s
                .semaphores
                .iter()
                .map(|i| p.semaphores[*i].name.as_str())
                .collect();
            extra.push(format!("semaphore {}", names.join(", ")));
        }
        if !s.waits.is_empty() {
            let names: Vec<&str> = s.waits.iter().map(|i| p.events[*i].name.as_str()).collect();
            extra.push(format!("waits {}", names.join(", ")));
        }
        if !s.sets.is_empty() {
            let names: Vec<&str> = s
                .sets
                .iter()
                .map(|(i, _)| p.events[*i].name.as_str())
                .collect();
            extra.push(format!("sets {}", names.join(", ")));
        }
        if !s.after.is_empty() {
            let deps: Vec<String> = s
                .after
                .iter()
                .map(|(d, c)| format!("{} {}", name(*d), condition_name(*c)))
                .collect();
            extra.push(format!("after {}", deps.join(", ")));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("  [{}]", extra.join("; "))
        };
        let _ = writeln!(
            o,
            "  {:<10} {:<9} {}{}",
            s.name,
            s.role.as_str(),
            instances,
            extra
        );
    }
    placement(p, &mut o);
    let _ = writeln!(o, "\nstart waves:");
    for (i, w) in p.start_waves.iter().enumerate() {
        let names: Vec<&str> = w.iter().map(|s| name(*s)).collect();
        let _ = writeln!(o, "  {}: {}", i + 1, names.join(", "));
    }
    if !p.queues.is_empty() {
        let _ = writeln!(o, "\nwiring:");
        for q in &p.queues {
            let ends = |es: &[Endpoint]| -> String {
                es.iter()
                    .map(|e| format!("{}:{}", name(e.stage), port_name(e.port)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let how = match q.wiring {
                Wiring::Direct => "direct pipe".to_string(),
                Wiring::Routed => format!(
                    "routed, {}, {}, capacity {}{}{}",
                    match q.delivery {
                        Delivery::Shared => "shared",
                        Delivery::Broadcast => "broadcast",
                    },
                    match q.framing {
                        Framing::Lines => "lines",
                        Framing::Nul => "nul",
                        Framing::Bytes => "bytes",
                    },
                    q.capacity,
                    q.sentinel
                        .as_ref()
                        .map(|s| format!(", sentinel {:?}", String::from_utf8_lossy(s)))
                        .unwrap_or_default(),
                    match q.order {
                        Order::Arrival => "",
                        Order::Writers => ", order writers",
                    }
                ),
            };
            let _ = writeln!(
                o,
                "  {}: {} → {} ({how})",
                q.name,
                ends(&q.writers),
                ends(&q.readers)
            );
        }
    }
    if !p.hosts.is_empty() {
        let _ = writeln!(o, "\nhosts:");
        for h in &p.hosts {
            let engine = match &h.engine {
                Engine::Ssh {
                    destination,
                    port,
                    options,
                } => {
                    let mut e = format!("ssh {destination}");
                    if let Some(port) = port {
                        e.push_str(&format!(" port {port}"));
                    }
                    if !options.is_empty() {
                        e.push_str(&format!(" options {}", options.join(" ")));
                    }
                    e
                }
                Engine::Slurm { partition, args } => {
                    let mut e = "slurm".to_string();
                    if let Some(part) = partition {
                        e.push_str(&format!(" partition {part}"));
                    }
                    if !args.is_empty() {
                        e.push_str(&format!(" args {}", args.join(" ")));
                    }
                    e
                }
            };
            let slots = match h.slots {
                Some(1) => "1 slot".to_string(),
                Some(n) => format!("{n} slots"),
                None => "unlimited slots".to_string(),
            };
            let cwd = h
                .cwd
                .as_ref()
                .map(|c| format!(", cwd {c}"))
                .unwrap_or_default();
            let _ = writeln!(o, "  {}: {engine}, {slots}{cwd}", h.name);
        }
    }
    if !p.semaphores.is_empty() {
        let _ = writeln!(o, "\nsemaphores:");
        for s in &p.semaphores {
            let _ = writeln!(
                o,
                "  {} ({} permit{})",
                s.name,
                s.count,
                if s.count == 1 { "" } else { "s" }
            );
        }
    }
    if !p.events.is_empty() {
        let _ = writeln!(o, "\nevents:");
        for e in &p.events {
            let _ = writeln!(
                o,
                "  {} (initially {})",
                e.name,
                if e.initially_set { "set" } else { "clear" }
            );
        }
    }
    let _ = writeln!(o, "\nshutdown order (drain):");
    for (i, step) in p.stop_order.iter().enumerate() {
        let names: Vec<&str> = step.iter().map(|s| name(*s)).collect();
        let _ = writeln!(o, "  {}: {}", i + 1, names.join(", "));
    }
    let _ = writeln!(
        o,
        "  grace period {}",
        humantime::format_duration(p.shutdown_timeout)
    );
    o
}

/// Where the instances of stages `on:` hosts go when the run starts: the first start
/// wave placed by the runtime's rule, in file order; later stages take what is free
/// when they start.
fn placement(p: &Plan, o: &mut String) {
    if p.hosts.is_empty() || p.stages.iter().all(|s| s.on.is_empty()) {
        return;
    }
    let _ = writeln!(
        o,
        "\nplacement at start (the most free slots, first listed on a tie):"
    );
    let mut used = vec![0usize; p.hosts.len()];
    let free = |used: &[usize], h: HostId| match p.hosts[h].slots {
        Some(n) => n.saturating_sub(used[h]),
        None => usize::MAX,
    };
    let first_wave = p.start_waves.first().cloned().unwrap_or_default();
    for (sid, s) in p.stages.iter().enumerate() {
        if s.on.is_empty() {
            continue;
        }
        let hosts: Vec<&str> = s.on.iter().map(|h| p.hosts[*h].name.as_str()).collect();
        if !first_wave.contains(&sid) {
            let _ = writeln!(
                o,
                "  {}: when it starts, on the most free of {}",
                s.name,
                hosts.join(", ")
            );
            continue;
        }
        let (count, batch) = match &s.instances {
            Instances::Replicas { count, .. } => (*count, false),
            Instances::Foreach { source, parallel } => {
                let known = source.known_count().map(|k| k as usize);
                (known.map_or(*parallel, |k| k.min(*parallel)), true)
            }
        };
        let mut per_host = vec![0usize; p.hosts.len()];
        let mut placed = Vec::new();
        let mut waiting = 0;
        for i in 0..count {
            match most_free_slots(&s.on, |h| free(&used, h)) {
                Some(h) => {
                    used[h] += 1;
                    per_host[h] += 1;
                    placed.push(format!("{} → {}", instance_name(s, i), p.hosts[h].name));
                }
                None => waiting += 1,
            }
        }
        let mut line = if batch {
            let spread: Vec<String> =
                s.on.iter()
                    .filter(|h| per_host[**h] > 0)
                    .map(|h| format!("{} ×{}", p.hosts[*h].name, per_host[*h]))
                    .collect();
            match count - waiting {
                1 => format!("1 item at a time: {}", spread.join(", ")),
                n => format!("{n} items at once: {}", spread.join(", ")),
            }
        } else if placed.len() > 8 {
            let spread: Vec<String> =
                s.on.iter()
                    .filter(|h| per_host[**h] > 0)
                    .map(|h| format!("{} ×{}", p.hosts[*h].name, per_host[*h]))
                    .collect();
            spread.join(", ")
        } else {
            placed.join(", ")
        };
        if waiting > 0 {
            let what = if batch { "items" } else { "instances" };
            line.push_str(&format!("; {waiting} more {what} wait for a free slot"));
        }
        let _ = writeln!(o, "  {}: {line}", s.name);
    }
}

fn instance_name(s: &StagePlan, i: usize) -> String {
    match &s.instances {
        Instances::Replicas {
            named_by_index: false,
            ..
        } => s.name.clone(),
        _ => format!("{}.{i}", s.name),
    }
}

fn describe_source(p: &Plan, s: &ForeachSource) -> String {
    match s {
        ForeachSource::Items(items) => format!("item (of {})", items.len()),
        ForeachSource::Range { from, to, step } => format!("number in {from}..{to} step {step}"),
        ForeachSource::Glob(t) => format!("file matching {}", t.render(&InstanceVars::default())),
        ForeachSource::Lines(t) => format!("line of {}", t.render(&InstanceVars::default())),
        ForeachSource::Queue(q) => format!(
            "record of queue {}",
            p.queues.get(*q).map(|q| q.name.as_str()).unwrap_or("?")
        ),
        ForeachSource::Matrix(dims) => {
            let total: usize = dims.iter().map(|(_, v)| v.len()).product();
            let names: Vec<String> = dims
                .iter()
                .map(|(n, v)| format!("{n} ({})", v.len()))
                .collect();
            format!("combination of {} (of {total})", names.join(" × "))
        }
    }
}

fn threshold(t: Threshold) -> String {
    match t {
        Threshold::Count(1) => "1 item".to_string(),
        Threshold::Count(n) => format!("{n} items"),
        Threshold::Percent(p) => format!("{p}% of the items"),
    }
}

pub fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Started => "started",
        Condition::Ready => "ready",
        Condition::Succeeded => "succeeded",
        Condition::Completed => "completed",
    }
}

pub fn port_name(p: Port) -> String {
    match p {
        Port::Stdin => "stdin".into(),
        Port::Stdout => "stdout".into(),
        Port::Stderr => "stderr".into(),
        Port::Fd(n) => format!("fd{n}"),
        Port::Foreach => "foreach".into(),
    }
}
