//! `order: writers` (SPEC 4.2) through the real binary: records grouped by writer in
//! writer order (stages in file order, then instance, then foreach item), whatever the
//! writers' speeds; foreach writers gathered in item order (GNU parallel's
//! `--keep-order`), also when their number is not known in advance; a writer that fails
//! or is killed in the middle of a record, or restarts; a later writer that blocks on
//! capacity until its turn; broadcast and several readers.

mod run_util;

use run_util::Test;

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn seq(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn the_first_writer_comes_first_even_when_it_is_the_slowest() {
    // `a` writes only once `b` and both `c` replicas have ended: their records wait in
    // prun (and their pipes) for it.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers}
stages:
  a:
    sh: 'until [ -e b.done ] && [ -e c.0.done ] && [ -e c.1.done ]; do sleep 0.01; done; seq -f a%g 1 300'
    stdout: q
  b:
    sh: 'seq -f b%g 1 2000; touch b.done'
    stdout: q
  c:
    sh: 'seq -f c${instance}-%g 1 50; touch c.${instance}.done'
    replicas: 2
    stdout: q
  gather: {cmd: [cat], stdin: q, stdout: {file: got.txt}}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut want = seq("a", 1, 300);
    want.extend(seq("b", 1, 2000));
    want.extend(seq("c0-", 1, 50));
    want.extend(seq("c1-", 1, 50));
    assert!(lines(&t.read("got.txt")) == want, "{}", run.context());
    assert_eq!(run.queue("q")["records"], 2400);
    assert_eq!(run.instance("gather")["records_in"], 2400);
}

#[test]
fn foreach_outputs_are_gathered_in_item_order() {
    // GNU parallel's --keep-order: items finish in a scrambled order, their output
    // comes out in item order, each item's lines together.
    let t = Test::new(
        r#"
version: 1
queues:
  results: {order: writers}
stages:
  job:
    foreach: {range: {from: 0, to: 40}}
    parallel: 8
    sh: 'sleep 0.0$(( (${item} * 37) % 9 )); echo "${item} start"; echo "${item} end"'
    stdout: results
  gather: {cmd: [cat], stdin: results, stdout: {file: got.txt}}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let want: Vec<String> = (0..40)
        .flat_map(|i| [format!("{i} start"), format!("{i} end")])
        .collect();
    assert!(lines(&t.read("got.txt")) == want, "{}", run.context());
}

#[test]
fn foreach_writers_of_unknown_count_come_before_later_stages() {
    // Items come from a queue (their number is known only at its end); `tail`, a later
    // stage in the file, ends long before the last item but its record comes last.
    let t = Test::new(
        r#"
version: 1
queues:
  ids: {}
  out: {order: writers}
stages:
  gen: {cmd: [seq, 1, 30], stdout: ids}
  work:
    foreach: {queue: ids}
    parallel: 6
    sh: 'sleep 0.0$(( (${item} * 37) % 9 )); echo "${item}-a"; echo "${item}-b"'
    stdout: out
  tail: {sh: 'echo tail-end', stdout: out}
  collect: {cmd: [cat], stdin: out, stdout: {file: got.txt}}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut want: Vec<String> = (1..=30)
        .flat_map(|i| [format!("{i}-a"), format!("{i}-b")])
        .collect();
    want.push("tail-end".into());
    assert!(lines(&t.read("got.txt")) == want, "{}", run.context());
}

#[test]
fn a_writer_that_fails_or_is_killed_mid_record_passes_the_turn_and_its_torn_record_is_counted() {
    // `a` writes last (once `b` and `c` are done) but comes first.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers}
stages:
  a:
    sh: 'until [ -e b.done ] && [ -e c.done ]; do sleep 0.01; done; printf "a1\na2\na-torn"; exit 3'
    on_failure: continue
    stdout: q
  b:
    sh: 'printf "b1\nb-torn"; touch b.done; kill -9 $$'
    on_failure: continue
    stdout: q
  c:
    sh: 'seq -f c%g 1 5; printf c-last; touch c.done'
    stdout: q
  gather: {cmd: [cat], stdin: q, stdout: {file: got.txt}}
"#,
    );
    let run = t.run();
    assert_ne!(run.code, Some(0), "{}", run.context());
    let mut want = vec!["a1".to_string(), "a2".into(), "b1".into()];
    want.extend(seq("c", 1, 5));
    // The last writer succeeded: its last record is delivered, delimiter added.
    want.push("c-last".into());
    assert!(lines(&t.read("got.txt")) == want, "{}", run.context());
    assert!(t.read("got.txt").ends_with("c-last\n"));
    assert_eq!(run.queue("q")["partial_records"], 2, "{}", run.context());
}

#[test]
fn a_restarted_writer_keeps_its_place() {
    // `a`'s first run fails after three records, its restart writes three more; `b`
    // ends first, and its records still come after both runs of `a`.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers}
stages:
  a:
    sh: 'until [ -e b.done ]; do sleep 0.01; done; if [ -e ran ]; then seq -f a%g 4 6; else touch ran; seq -f a%g 1 3; exit 1; fi'
    restart: {policy: on-failure, max: 2}
    stdout: q
  b:
    sh: 'seq -f b%g 1 4; touch b.done'
    stdout: q
  gather: {cmd: [cat], stdin: q, stdout: {file: got.txt}}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut want = seq("a", 1, 6);
    want.extend(seq("b", 1, 4));
    assert!(lines(&t.read("got.txt")) == want, "{}", run.context());
    assert_eq!(run.instance("a")["restarts"], 1, "{}", run.context());
}

#[test]
fn a_later_writer_blocks_on_capacity_until_its_turn_and_nothing_is_lost() {
    // `b` writes far more than capacity and its pipe hold: it can only end once `a`
    // ended and its turn came. No deadlock, nothing lost, capacity kept.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers, capacity: 4}
stages:
  a:
    sh: 'seq -f a%g 1 300000; date +%s%N > a.end'
    stdout: q
  b:
    sh: 'seq -f b%g 1 300000; date +%s%N > b.end'
    stdout: q
  gather: {cmd: [cat], stdin: q, stdout: {file: got.txt}}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let got = t.read("got.txt");
    let mut want = seq("a", 1, 300000);
    want.extend(seq("b", 1, 300000));
    assert!(lines(&got) == want, "records lost or out of order");
    let end = |f: &str| t.read(f).trim().parse::<u128>().expect("timestamp");
    assert!(
        end("b.end") >= end("a.end"),
        "b could not end before a: it was blocked"
    );
    let q = run.queue("q");
    assert_eq!(q["records"], 600000);
    assert!(q["max_depth"].as_u64().unwrap() <= 4, "{q}");
}

#[test]
fn broadcast_readers_each_get_the_writers_in_order() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers, delivery: broadcast}
stages:
  a:
    sh: 'until [ -e b.done ]; do sleep 0.01; done; seq -f a%g 1 500'
    stdout: q
  b:
    sh: 'seq -f b%g 1 500; touch b.done'
    stdout: q
  r:
    sh: 'cat > out.$PRUN_INSTANCE'
    replicas: 2
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut want = seq("a", 1, 500);
    want.extend(seq("b", 1, 500));
    for i in 0..2 {
        assert!(
            lines(&t.read(&format!("out.{i}"))) == want,
            "reader {i}: {}",
            run.context()
        );
    }
}

#[test]
fn shared_readers_each_see_the_writers_in_order() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers}
stages:
  a:
    sh: 'until [ -e b.done ]; do sleep 0.01; done; seq -f a%g 1 3000'
    stdout: q
  b:
    sh: 'seq -f b%g 1 3000; touch b.done'
    stdout: q
  r:
    sh: 'while read -r l; do echo "$l"; done > out.$PRUN_INSTANCE'
    replicas: 3
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut want = seq("a", 1, 3000);
    want.extend(seq("b", 1, 3000));
    let rank = |l: &str| want.iter().position(|w| w == l).expect("a record written");
    let mut all = Vec::new();
    for i in 0..3 {
        let got = lines(&t.read(&format!("out.{i}")));
        let ranks: Vec<usize> = got.iter().map(|l| rank(l)).collect();
        assert!(
            ranks.windows(2).all(|p| p[0] < p[1]),
            "reader {i} got records out of writer order"
        );
        all.extend(ranks);
    }
    all.sort();
    assert_eq!(
        all,
        (0..6000).collect::<Vec<_>>(),
        "every record exactly once"
    );
}

#[test]
fn an_interrupt_while_later_writers_wait_loses_nothing_uncounted() {
    // `a` has the turn and never ends on its own; `b` waits (its share of the queue,
    // then its pipe, full). SIGINT: prun stops both, `b`'s turn comes, and every record
    // `b` wrote is delivered or counted.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {order: writers, capacity: 10}
stages:
  a: {sh: 'seq -f a%g 1 5; exec sleep 30', stdout: q}
  b: {sh: 'seq -f b%g 1 300000', stdout: q}
  r: {sh: 'cat > got.txt', stdin: q}
"#,
    );
    let child = t
        .command("report.json", &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prun starts");
    run_util::wait_until("a's records", run_util::DEADLINE, || {
        t.read("got.txt").lines().count() >= 5
    });
    // SAFETY: signalling the prun we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = t.finish(child, "report.json");
    assert!(
        run.elapsed < std::time::Duration::from_secs(10),
        "{}",
        run.context()
    );
    let got = lines(&t.read("got.txt"));
    assert_eq!(got[..5], seq("a", 1, 5)[..], "{}", run.context());
    let b = &got[5..];
    assert!(
        b.iter().cloned().eq(seq("b", 1, b.len())),
        "b's records follow in order"
    );
    let q = run.queue("q");
    let counted = q["discarded"].as_u64().unwrap() + q["in_flight_at_failure"].as_u64().unwrap();
    assert_eq!(
        q["records"].as_u64().unwrap(),
        got.len() as u64 + counted,
        "every record read from a writer is delivered or counted: {q}"
    );
    assert!(q["max_depth"].as_u64().unwrap() <= 10, "{q}");
}
