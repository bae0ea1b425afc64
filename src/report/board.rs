//! The live status board (SPEC 7), drawn with indicatif through [`BoardTerm`], so it
//! never writes to the terminal itself and never blocks.
//!
//! One row per stage: a spinner while it has running instances (a fixed mark once
//! every instance ended), its name, its instances by state (colored), its elapsed time;
//! a foreach stage with known items is a progress bar with done/total, running items,
//! failures and an ETA (none before the first item ends). One row per routed queue:
//! records, records/s. The board takes at most a third of the terminal's height; the
//! rows that do not fit (ended stages first) are summed up on one line. Counts are kept
//! incrementally: a foreach of a million items costs O(1) per state change. Redraws are
//! driven by the reporter (ticks and batched log lines), never by indicatif threads.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::screen::{BoardTerm, Screen, terminal_size};
use crate::event::InstanceId;

/// Redraws per second at most.
const REFRESH_HZ: u8 = 15;

/// Instance states, in the order the board lists them.
const STATES: [&str; 10] = [
    "running",
    "ready",
    "waiting",
    "succeeded",
    "failed",
    "killed",
    "timed_out",
    "could_not_start",
    "stopped",
    "skipped",
];

fn state_index(name: &str) -> usize {
    STATES.iter().position(|s| *s == name).unwrap_or(2)
}

fn is_end(i: usize) -> bool {
    i >= 3
}

/// SGR color of a state on the board.
fn state_color(i: usize) -> &'static str {
    match i {
        0 | 1 => "36",
        2 => "2",
        3 => "32",
        4..=7 => "31",
        _ => "33",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Stage(usize),
    Queue(usize),
}

struct StageRow {
    name: String,
    bar: ProgressBar,
    total: Option<u64>,
    counts: [usize; STATES.len()],
    first_start: Option<Instant>,
    last_end: Option<Instant>,
    /// Running foreach items (instance → item), to name a few.
    items: BTreeMap<InstanceId, String>,
    /// Which style the bar has now: (has a total, still active).
    style: Option<(bool, bool)>,
}

impl StageRow {
    fn instances(&self) -> usize {
        self.counts.iter().sum()
    }

    fn active(&self) -> bool {
        self.counts[..3].iter().any(|&c| c > 0)
    }

    fn ended(&self) -> bool {
        self.instances() > 0 && !self.active()
    }
}

struct QueueRow {
    name: String,
    bar: ProgressBar,
    records: u64,
    rate: f64,
    at: Option<Instant>,
}

pub struct Board {
    multi: MultiProgress,
    term: BoardTerm,
    color: bool,
    stages: Vec<StageRow>,
    queues: Vec<QueueRow>,
    summary: ProgressBar,
    /// Instance → (stage row, state index).
    last: HashMap<InstanceId, (usize, usize)>,
    shown: Vec<Key>,
    summary_shown: bool,
    rows: u16,
    /// Routed queues' capacities by name.
    capacities: HashMap<String, u64>,
}

impl Board {
    pub fn new(screen: Screen, color: bool, capacities: HashMap<String, u64>) -> Board {
        let (cols, rows) = terminal_size().unwrap_or((80, 24));
        let term = BoardTerm::new(screen, cols, budget(rows));
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), REFRESH_HZ);
        let multi = MultiProgress::with_draw_target(target);
        let summary = ProgressBar::hidden();
        summary.set_style(style("{msg}"));
        Board {
            multi,
            term,
            color,
            stages: Vec::new(),
            queues: Vec::new(),
            summary,
            last: HashMap::new(),
            shown: Vec::new(),
            summary_shown: false,
            rows,
            capacities,
        }
    }

    /// Run `f` (which writes lines through `append`) with the board cleared, then
    /// redraw it: one synchronized update.
    pub fn above(&mut self, bytes: &[u8]) {
        self.term.hold(true);
        let term = self.term.clone();
        self.multi.suspend(|| term.append(bytes));
        self.term.hold(false);
    }

    fn stage_row(&mut self, stage: usize, name: &str) -> usize {
        while self.stages.len() <= stage {
            let bar = ProgressBar::hidden();
            bar.set_prefix(String::new());
            self.stages.push(StageRow {
                name: String::new(),
                bar,
                total: None,
                counts: [0; STATES.len()],
                first_start: None,
                last_end: None,
                items: BTreeMap::new(),
                style: None,
            });
        }
        if self.stages[stage].name.is_empty() {
            self.stages[stage].name = name.to_string();
        }
        stage
    }

    pub fn add_instance(&mut self, id: InstanceId, stage: usize, stage_name: &str) {
        let b = self.stage_row(stage, stage_name);
        let w = state_index("waiting");
        self.last.insert(id, (b, w));
        self.stages[b].counts[w] += 1;
        self.refresh(b);
    }

    /// A foreach stage with a known total becomes a progress bar.
    pub fn batch_started(&mut self, stage: usize, stage_name: &str, total: Option<usize>) {
        let b = self.stage_row(stage, stage_name);
        if let Some(n) = total {
            let row = &mut self.stages[b];
            row.total = Some(n as u64);
            row.bar.set_length(n as u64);
            row.bar.reset_eta();
        }
        self.refresh(b);
    }

    /// The number of items of a foreach stage became known (or final).
    pub fn batch_total(&mut self, stage: usize, total: u64) {
        if let Some(row) = self.stages.get_mut(stage) {
            row.total = Some(total);
            row.bar.set_length(total);
            self.refresh(stage);
        }
    }

    /// A foreach item is over for good: its counts stay, the instance is forgotten.
    pub fn forget(&mut self, id: InstanceId) {
        if let Some((b, _)) = self.last.remove(&id)
            && let Some(row) = self.stages.get_mut(b)
        {
            row.items.remove(&id);
        }
    }

    pub fn state_changed(&mut self, id: InstanceId, state: &str, item: Option<&str>, now: Instant) {
        let Some((b, old)) = self.last.get(&id).copied() else {
            return;
        };
        let new = state_index(state);
        let row = &mut self.stages[b];
        row.counts[old] = row.counts[old].saturating_sub(1);
        row.counts[new] += 1;
        if new == 0 && row.first_start.is_none() {
            row.first_start = Some(now);
            row.bar.reset_elapsed();
        }
        match (new < 2, item) {
            (true, Some(item)) => {
                row.items.insert(id, item.to_string());
            }
            _ => {
                row.items.remove(&id);
            }
        }
        if is_end(new) {
            row.last_end = Some(now);
        }
        self.last.insert(id, (b, new));
        if is_end(new) && row.total.is_some() {
            // Done: ended items that ran (skipped ones are not progress).
            let done: usize = (3..STATES.len() - 1).map(|i| row.counts[i]).sum();
            row.bar.set_position(done as u64);
        }
        self.refresh(b);
    }

    /// Records routed so far through a queue (about once a second).
    pub fn queue_progress(
        &mut self,
        queue: usize,
        name: &str,
        records: u64,
        depth: u64,
        now: Instant,
    ) {
        let i = match self.queues.iter().position(|q| q.name == name) {
            Some(i) => i,
            None => {
                let bar = ProgressBar::hidden();
                bar.set_style(style("  {prefix} {msg}"));
                self.queues.push(QueueRow {
                    name: name.to_string(),
                    bar,
                    records: 0,
                    rate: 0.0,
                    at: None,
                });
                let _ = queue;
                self.queues.len() - 1
            }
        };
        let color = self.color;
        let capacity = self.capacities.get(name).copied();
        let q = &mut self.queues[i];
        if let Some(at) = q.at {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 {
                q.rate = records.saturating_sub(q.records) as f64 / secs;
            }
        }
        q.records = records;
        q.at = Some(now);
        q.bar
            .set_prefix(paint(color, "1", &format!("queue {}", q.name)));
        let mut msg = format!("{records} records · {:.0}/s · depth {depth}", q.rate);
        if let Some(c) = capacity {
            let _ = write!(msg, "/{c}");
        }
        q.bar.set_message(msg);
        self.layout();
    }

    /// Spinners turn, elapsed times and ETAs move, a resized terminal is followed.
    pub fn tick(&mut self) {
        if let Some((cols, rows)) = terminal_size() {
            self.term.set_size(cols, budget(rows));
            if rows != self.rows {
                self.rows = rows;
                self.layout();
            }
        }
        for b in 0..self.stages.len() {
            if self.stages[b].active() && self.shown.contains(&Key::Stage(b)) {
                self.refresh(b);
                self.stages[b].bar.tick();
            }
        }
    }

    /// Clear the board for good (the end of the run).
    pub fn clear(&mut self) {
        self.term.hold(true);
        let _ = self.multi.clear();
        for k in std::mem::take(&mut self.shown) {
            self.multi.remove(self.bar(k));
        }
        if self.summary_shown {
            self.multi.remove(&self.summary);
        }
        self.summary_shown = false;
        self.term.hold(false);
    }

    fn bar(&self, k: Key) -> &ProgressBar {
        match k {
            Key::Stage(b) => &self.stages[b].bar,
            Key::Queue(q) => &self.queues[q].bar,
        }
    }

    /// Set a stage row's style and message from its counts.
    fn refresh(&mut self, b: usize) {
        let color = self.color;
        let row = &mut self.stages[b];
        let want = (row.total.is_some(), !row.ended());
        if row.style != Some(want) {
            row.style = Some(want);
            let t = match want {
                (false, true) => "{spinner} {prefix} {msg}",
                (false, false) => "{prefix} {msg}",
                (true, true) => "{spinner} {prefix} [{bar:24}] {pos}/{len} {msg}",
                (true, false) => "{prefix} [{bar:24}] {pos}/{len} {msg}",
            };
            row.bar.set_style(style(t).progress_chars("=> "));
        }
        let failed: usize = (4..=7).map(|i| row.counts[i]).sum();
        let prefix = if row.ended() {
            if failed > 0 {
                format!(
                    "{} {}",
                    paint(color, "31", "✗"),
                    paint(color, "1", &row.name)
                )
            } else {
                format!(
                    "{} {}",
                    paint(color, "32", "✓"),
                    paint(color, "1", &row.name)
                )
            }
        } else {
            paint(color, "1", &row.name)
        };
        row.bar.set_prefix(prefix);
        let mut parts: Vec<String> = Vec::new();
        for (i, c) in shown_counts(&row.counts) {
            if row.total.is_some() && i == 2 {
                continue;
            }
            let text = format!("{c} {}", STATES[i].replace('_', " "));
            parts.push(paint(color, state_color(i), &text));
        }
        let mut msg = parts.join(" · ");
        if row.total.is_some() && !row.items.is_empty() {
            let names: Vec<&str> = row.items.values().take(3).map(|s| s.as_str()).collect();
            let more = row.items.len().saturating_sub(names.len());
            let _ = write!(msg, " ({}", names.join(", "));
            if more > 0 {
                let _ = write!(msg, ", +{more}");
            }
            msg.push(')');
        }
        if let Some(start) = row.first_start {
            let end = if row.ended() {
                row.last_end.unwrap_or(start)
            } else {
                Instant::now()
            };
            let _ = write!(msg, " · {}", elapsed(end.saturating_duration_since(start)));
        }
        if let Some(total) = row.total {
            let pos = row.bar.position();
            if row.active() && pos > 0 && pos < total {
                let _ = write!(msg, " · ETA {}", elapsed(row.bar.eta()));
            }
        }
        row.bar.set_message(msg);
        self.layout();
    }

    /// Show the rows that fit in a third of the terminal, sum up the rest on one line.
    fn layout(&mut self) {
        let budget = budget(self.rows) as usize;
        let mut keys: Vec<Key> = (0..self.stages.len())
            .filter(|&b| self.stages[b].instances() > 0)
            .map(Key::Stage)
            .collect();
        keys.extend((0..self.queues.len()).map(Key::Queue));
        let mut hidden: Vec<Key> = Vec::new();
        if keys.len() > budget {
            let room = budget.saturating_sub(1);
            // Hide ended stages first (latest first), then waiting ones, then queues,
            // then whatever comes last.
            let order = |k: &Key| match k {
                Key::Stage(b) if self.stages[*b].ended() => 0,
                Key::Stage(b) if self.stages[*b].counts[..2].iter().all(|&c| c == 0) => 1,
                Key::Queue(_) => 2,
                Key::Stage(_) => 3,
            };
            let mut candidates: Vec<(usize, usize)> = keys
                .iter()
                .enumerate()
                .map(|(pos, k)| (order(k), usize::MAX - pos))
                .collect();
            candidates.sort();
            let excess = keys.len() - room;
            let drop: Vec<usize> = candidates
                .into_iter()
                .take(excess)
                .map(|(_, p)| usize::MAX - p)
                .collect();
            let mut kept = Vec::new();
            for (pos, k) in keys.into_iter().enumerate() {
                if drop.contains(&pos) {
                    hidden.push(k);
                } else {
                    kept.push(k);
                }
            }
            keys = kept;
        }
        let want_summary = !hidden.is_empty();
        if want_summary {
            self.summary.set_message(self.summary_text(&hidden));
        }
        if keys == self.shown && want_summary == self.summary_shown {
            return;
        }
        for k in std::mem::take(&mut self.shown) {
            self.multi.remove(self.bar(k));
        }
        if self.summary_shown {
            self.multi.remove(&self.summary);
        }
        for k in &keys {
            let bar = self.multi.add(self.bar(*k).clone());
            // A bar added again has no line in the board until it draws.
            bar.tick();
        }
        if want_summary {
            self.multi.add(self.summary.clone()).tick();
        }
        self.shown = keys;
        self.summary_shown = want_summary;
    }

    fn summary_text(&self, hidden: &[Key]) -> String {
        let mut counts = [0usize; STATES.len()];
        let (mut stages, mut queues) = (0, 0);
        for k in hidden {
            match k {
                Key::Stage(b) => {
                    stages += 1;
                    for (i, c) in self.stages[*b].counts.iter().enumerate() {
                        counts[i] += c;
                    }
                }
                Key::Queue(_) => queues += 1,
            }
        }
        let mut head = Vec::new();
        if stages > 0 {
            head.push(format!(
                "{stages} more stage{}",
                if stages == 1 { "" } else { "s" }
            ));
        }
        if queues > 0 {
            head.push(format!(
                "{queues} more queue{}",
                if queues == 1 { "" } else { "s" }
            ));
        }
        let mut msg = format!("… {}", head.join(", "));
        let parts: Vec<String> = shown_counts(&counts)
            .into_iter()
            .map(|(i, c)| {
                paint(
                    self.color,
                    state_color(i),
                    &format!("{c} {}", STATES[i].replace('_', " ")),
                )
            })
            .collect();
        if !parts.is_empty() {
            let _ = write!(msg, ": {}", parts.join(" · "));
        }
        msg
    }
}

/// The counts worth showing: `ready` is shown as running (a probe passed; the board
/// shows what runs).
fn shown_counts(counts: &[usize; STATES.len()]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let c = match i {
            0 => c + counts[1],
            1 => 0,
            _ => c,
        };
        if c > 0 {
            out.push((i, c));
        }
    }
    out
}

/// Rows the board may take: a third of the terminal, at least two.
fn budget(rows: u16) -> u16 {
    (rows / 3).max(2)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn paint(color: bool, sgr: &str, text: &str) -> String {
    if color {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}
